"""PNG figures of the quality tools (matplotlib, headless): calibration frontier and rollout heatmap."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def calibration(points: list[dict], frontier: list[dict], max_flops: float | None, path: Path, title: str) -> Path:
    """Agreement vs FLOPs ratio, one colour per strategy, the frontier as a line, the budget as a rule."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for strategy in sorted({p["settings"]["strategy"] for p in points}):
        chosen = [p for p in points if p["settings"]["strategy"] == strategy]
        axis.scatter([p["flops_ratio"] for p in chosen], [p["top1"] for p in chosen], label=strategy, s=22)
    xs, ys = [p["flops_ratio"] for p in frontier], [p["top1"] for p in frontier]
    axis.plot(xs, ys, "k--", lw=1, drawstyle="steps-post", label="frontier")
    if max_flops is not None:
        axis.axvline(max_flops, color="grey", lw=1, ls=":", label=f"max FLOPs {max_flops:.0%}")
    axis.set(xlabel="prefill FLOPs, pruned / unpruned", ylabel="teacher-forced top-1 agreement", title=title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def rollout(binned: list[list[float]], edges: list[int], spans: list[tuple[str, int, int]], path: Path, title: str):
    """Layers x position bins of the last query's rollout mass, with the modality spans marked below."""
    import numpy as np

    plt = _pyplot()
    data = np.asarray(binned)
    figure, (axis, strip) = plt.subplots(
        2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [12, 1]}, constrained_layout=True
    )
    image = axis.imshow(
        np.log10(data + 1e-6), aspect="auto", origin="lower", extent=(edges[0], edges[-1], -0.5, len(data) - 0.5)
    )
    figure.colorbar(image, ax=axis, label="log10 rollout mass per bin")
    axis.set(ylabel="layer", title=title)
    colours = {"text": "#bbbbbb", "video": "#1f77b4", "audio": "#ff7f0e", "image": "#2ca02c"}
    for name, start, end in spans:
        strip.axvspan(start, end, color=colours.get(name, "k"), label=name)
    handles = {h.get_label(): h for h in strip.patches}
    strip.legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    strip.set(yticks=[], xlabel="input position")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
