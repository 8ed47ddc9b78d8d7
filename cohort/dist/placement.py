"""Which GPU (and, pinned, which cores) each rank of a node uses, and how the collectives travel when members share one.

One rank per GPU is the default. ``train.members_per_gpu: n`` packs n member ranks on each
GPU, the way a cohort of small members fills one big GPU (the DML paper: small members let
larger cohorts fit on the same hardware) and the way a cohort runs on a one-GPU machine
(``auto``, the default, packs only when the node has fewer GPUs than ranks).

A GPU holds replica r of n consecutive members, so a member's own replicas always sit on
distinct GPUs. NCCL refuses a communicator in which two ranks share a GPU, so when n > 1:

    replica group (a member's DDP all-reduce, its BatchNorm broadcast)  NCCL: distinct GPUs
    member group (the logit exchange, the cohort's prediction gather)   gloo, through host memory
    world group (barriers, the agreed stop step, checkpoint checks)     gloo

The exchange then copies ``[B, C + 1]`` floats to the host and back every step; the
gradients' all-reduce, the large message, stays on NCCL.

Torch-free: ``cohort train`` checks a layout before any process starts.
"""

from __future__ import annotations

from dataclasses import dataclass


class PlacementError(ValueError):
    """The ranks of a node cannot be placed on its GPUs."""


@dataclass(frozen=True)
class Placement:
    """n members per GPU on a node whose ranks hold whole groups of n members × R replicas."""

    members_per_gpu: int
    replicas: int

    def gpu(self, local_rank: int) -> int:
        """The node-local GPU index of a local rank (rank = member · R + replica, member-major)."""
        if self.members_per_gpu == 1:
            return local_rank
        local_member, replica = divmod(local_rank, self.replicas)
        return (local_member // self.members_per_gpu) * self.replicas + replica

    def backends(self, device_type: str) -> dict[str, str]:
        """The backend of each process group: ``world``, ``replica`` and ``member``."""
        if device_type != "cuda":
            return {"world": "gloo", "replica": "gloo", "member": "gloo"}
        if self.members_per_gpu == 1:
            return {"world": "nccl", "replica": "nccl", "member": "nccl"}
        return {"world": "gloo", "replica": "nccl", "member": "gloo"}


def place(
    members_per_gpu: int | str, members: int, replicas: int, local_world_size: int, visible_gpus: int
) -> Placement:
    """The placement of a node's ``local_world_size`` ranks on its ``visible_gpus`` GPUs.

    ``members_per_gpu``: an int n (a divisor of K, checked by the config), or ``auto``: one
    rank per GPU when there are enough, else the smallest n that fits.
    """
    if members_per_gpu == "auto":
        if visible_gpus >= local_world_size:
            return Placement(1, replicas)
        for n in range(2, members + 1):
            if members % n == 0 and local_world_size % (n * replicas) == 0 and local_world_size // n <= visible_gpus:
                return Placement(n, replicas)
        least = min(
            (
                local_world_size // n
                for n in range(1, members + 1)
                if members % n == 0 and local_world_size % (n * replicas) == 0
            ),
            default=local_world_size,
        )
        raise PlacementError(
            f"{local_world_size} ranks on this node need at least {least} GPUs (a member's {replicas} replica(s) on "
            f"distinct GPUs, up to K={members} members per GPU) but {visible_gpus} are visible; use fewer "
            f"replicas or ranks per node, or train.device=cpu"
        )
    n = members_per_gpu
    if n > 1 and local_world_size % (n * replicas):
        raise PlacementError(
            f"train.members_per_gpu={n} needs whole groups of {n} members × {replicas} replica(s) on each node, but "
            f"this node has {local_world_size} ranks; start a multiple of {n * replicas} ranks per node"
        )
    needed = local_world_size // n
    if visible_gpus < needed:
        raise PlacementError(
            f"{local_world_size} ranks on this node with train.members_per_gpu={n} need {needed} GPUs but "
            f"{visible_gpus} are visible; raise train.members_per_gpu (a divisor of K={members}), use "
            f"members_per_gpu=auto, or train.device=cpu"
        )
    return Placement(n, replicas)


def rank_cores(cores: list[int], local_world_size: int, local_rank: int) -> list[int]:
    """A local rank's contiguous share of ``cores`` (ranks share cores when there are fewer)."""
    if len(cores) < local_world_size:
        return [cores[local_rank % len(cores)]]
    share = len(cores) // local_world_size
    return cores[local_rank * share : (local_rank + 1) * share]
