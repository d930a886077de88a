"""Several processes on PyTorch's own engine: `torchrun --nproc_per_node=N -m vistrain train ...`.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `setup` joins the process group (gloo on CPUs; on CUDA GPUs, NCCL
for the GPUs' tensors and gloo for the CPU's, see `process_group_backend`). Each
process computes the features of its share of the images into the shared feature cache, the head trains with
DistributedDataParallel (gradients averaged across processes), and only rank 0 writes the run directory.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def process_group_backend(device: torch.device) -> str:
    """The process group's backend for training on `device`: on a CUDA GPU, NCCL for CUDA tensors (fine-tuning's
    gradients) and gloo for CPU ones (the head on cached features, the run directory's name, barriers); gloo
    alone on the CPU, or where torch has no NCCL."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


def setup(device: torch.device = torch.device("cpu")) -> Context:
    """Join torchrun's process group when started by it (WORLD_SIZE > 1), for training on `device` (each process's
    own GPU: `core.device.resolve_device`); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=process_group_backend(device))
        atexit.register(dist.destroy_process_group)
    return Context(dist.get_rank(), dist.get_world_size())


def is_main_process() -> bool:
    """Whether this process is the one that writes and reports: rank 0 under torchrun, or the only one."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier(context: Context) -> None:
    if context.active:
        dist.barrier()


def share(context: Context, value):
    """Rank 0's `value` on every rank (e.g. the run directory it chose)."""
    if not context.active:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
