"""Count the operations that make the host wait for the device, and the kernels a piece of code launches.

On a GPU every host read of a device value (`int(t)`, `.item()`, `.tolist()`, `.cpu()`, `nonzero`, boolean
indexing, anything whose output shape depends on values) waits until all queued work has finished; so does a
host-to-device copy from pageable memory. A handful per layer erases what pruning saves, because the GPU
idles while Python launches the next kernels. On the CPU nothing waits, but the same operations run, so
counting them here tells what a GPU run would stall on: tests use this to keep FastAV's overhead at zero per
layer and per decode step, and `benchmarks/gpu.py` reports it beside the timings.

    with HostSyncCounter() as counter:
        model(**inputs)
    counter.host_reads, counter.kernels, counter.ops   # totals, and a Counter by op name
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# aten ops that read device values on the host (or size their output by them).
_READS = {
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::equal",
    "aten::is_nonzero",
}
_INDEXING = {"aten::index", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_"}
_COPIES = {"aten::_to_copy", "aten::copy_"}


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _copy_waits(name: str, args, kwargs) -> bool:
    """A device-to-host copy, or a host-to-device copy that is not queued (pageable source or blocking)."""
    if name == "aten::copy_":
        dst, src = args[0], args[1]
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    else:
        src = args[0]
        device = kwargs.get("device")
        dst_type = torch.device(device).type if device is not None else src.device.type
        non_blocking = kwargs.get("non_blocking", False)
        if dst_type == src.device.type:
            return False
        if dst_type == "cpu":
            return True
        return not (non_blocking and src.is_pinned())
    if dst.device.type == src.device.type:
        return False
    return dst.device.type == "cpu" or not (non_blocking and src.is_pinned())


class _Dispatch(TorchDispatchMode):
    def __init__(self, owner: HostSyncCounter) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        owner = self.owner
        if not func.is_view:
            owner.kernels += 1
            owner.ops[name] += 1
        if (
            name in _READS
            or (name in _INDEXING and _bool_index(args))
            or (name in _COPIES and _copy_waits(name, args, kwargs))
        ):
            owner.host_reads += 1
            owner.reads[name] += 1
        return func(*args, **kwargs)


class _Function(TorchFunctionMode):
    """`tolist()` / `numpy()` of a CPU tensor dispatch no aten op; on a GPU they copy to the host and wait."""

    def __init__(self, owner: HostSyncCounter) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.numpy) and args and args[0].device.type == "cpu":
            self.owner.host_reads += 1
            self.owner.reads[func.__name__] += 1
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """Context manager counting host reads of device values and non-view aten ops (a kernel-launch proxy)."""

    def __init__(self) -> None:
        self.host_reads = 0
        self.kernels = 0
        self.reads: Counter[str] = Counter()
        self.ops: Counter[str] = Counter()
        self._modes: list = []

    def __enter__(self) -> HostSyncCounter:
        self._modes = [_Function(self), _Dispatch(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        self._modes = []

    def snapshot(self) -> tuple[int, int]:
        return self.host_reads, self.kernels
