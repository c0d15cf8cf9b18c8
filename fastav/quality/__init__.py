"""Quality tools over the pruning core: how closely a pruned model follows the unpruned one.

`agreement` (teacher-forced top-1 / KL against the unpruned model), `calibration` (sweeps, frontier, the best
setting under a FLOPs budget), `rollout` (attention rollout of the last query).
"""
