"""Data-parallel training under torchrun: the same grade-train command on one process or many.

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; with more than one process each trains on its share
of every epoch's draws (the global batch stays the profile's), gradients are averaged by
DistributedDataParallel (gloo on CPU, nccl on GPUs), rank 0 alone validates, checkpoints and
writes, and the validation result is broadcast so every rank takes the same lr step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def workers() -> Workers:
    """This process's place among torchrun's workers; joins the process group on first use."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Workers()
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Workers(dist.get_rank(), dist.get_world_size())


def training_device() -> torch.device:
    """This worker's GPU when there is one (torchrun's LOCAL_RANK picks it), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def share_of(indices: list[int], team: Workers) -> list[int]:
    """This rank's draws: every rank sampled the same list (same seed), each takes every n-th."""
    return indices[team.rank::team.world_size]


def from_main(value, team: Workers):
    """``value`` as rank 0 has it, on every rank."""
    if not team.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
