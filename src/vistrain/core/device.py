"""Where torch work runs (`--device auto|cpu|cuda`), in what precision, and in batches that fit its memory.

`resolve_device` turns a name into a `torch.device` (under torchrun, each process's own GPU), `autocast` and
`grad_scaler` give mixed precision on CUDA (bf16 where the GPU has it, else fp16 with loss scaling) and nothing on
the CPU, and `HalvingBatches` runs a batch in pieces, halving them when the device runs out of memory. The same code
runs on the CPU, so the tests run every path with `--device cpu`.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Callable, ContextManager, TypeVar

from vistrain.core.errors import OptionError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
R = TypeVar("R")


def resolve_device(name: str = "auto") -> torch.device:
    """The device `name` means: "cpu"; "cuda", the CUDA GPU (under torchrun, the one of the process's LOCAL_RANK),
    a ValueError of one line when there is none; "auto", CUDA when there is one, else the CPU."""
    import torch  # slow to import: only when torch work is about to run

    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; devices: {', '.join(DEVICES)}")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name == "cuda":
            raise OptionError(f"{{device}} cuda: no CUDA GPU is available here (torch {torch.__version__}"
                             + ("" if torch.version.cuda else ", built without CUDA")
                             + "); use {device} cpu or auto")
        return torch.device("cpu")
    rank, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if rank >= count:
        raise ValueError(f"process LOCAL_RANK={rank} has no GPU of its own: this machine has {count}; start at most "
                         f"{count} processes per machine (torchrun --nproc_per_node)")
    return torch.device("cuda", rank)


def describe_device(device: torch.device) -> str:
    """`device` for people: "cpu", or "cuda:0 (NVIDIA H200)"."""
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type on `device`: bfloat16 on a CUDA GPU that has it, else float16; None on the CPU
    (float32 throughout)."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> ContextManager:
    """Mixed precision for the forward passes (and losses) in this block on `device`; nothing on the CPU."""
    import torch

    dtype = autocast_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for float16 training (so small gradients do not underflow); a pass-through for bfloat16 and the
    CPU."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)


def ignore(size: int) -> None:
    """An `on_halve` that says nothing."""


class HalvingBatches:
    """Runs work on a batch in pieces that fit the device's memory. Pieces start as the whole batch; when the work
    runs out of memory, the piece size is halved, `on_halve(new size)` is told, and the work starts the batch again
    with the smaller pieces, which later batches keep. Out of memory with pieces of one image is raised."""

    def __init__(self, on_halve: Callable[[int], None] = ignore):
        self.on_halve = on_halve
        self.limit: int | None = None  # the largest piece that fitted; None until memory ran out

    def run(self, size: int, work: Callable[[list[slice]], R]) -> R:
        """`work(pieces)` for a batch of `size` items: `pieces` are the slices to process one after another (all of
        them, from the first: work that ran out of memory is called again from scratch)."""
        import torch

        while True:
            step = min(size, self.limit or size)
            try:
                return work([slice(start, min(start + step, size)) for start in range(0, size, step)])
            except torch.OutOfMemoryError:
                if step == 1:
                    raise
                self.limit = step // 2
                if torch.cuda.is_initialized():
                    torch.cuda.empty_cache()
                self.on_halve(self.limit)


def halved_message(what: str, size: int) -> str:
    """What to say when `HalvingBatches` halved `what` (e.g. "fine-tuning batches") to pieces of `size`."""
    return f"out of memory: {what} now run in pieces of {size}"
