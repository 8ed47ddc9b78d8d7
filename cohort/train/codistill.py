"""Codistillation: stale copies of the peers' networks on every rank (``exchange.mode: codistill``).

Anil et al. 2018 ("Large scale distributed neural network training through online
distillation") let each member read its peers through copies of their weights, refreshed
every few hundred steps, instead of exchanging predictions every step; pfnet-research's
``sc20-online-codistillation`` (``imagenet/train.py``, ``comm_model`` and
``train_loop_distillation_original``) is the public code: after a burn-in, every
``comm_model_freq`` (50) iterations each team broadcasts its model's *parameters* to the
other, whose copy then predicts the current batch under ``no_grad`` in train mode (the copy
is never put in eval mode, so BatchNorm normalises by the batch's own statistics).

Here, every rank holds a copy of each peer's network, built as the peer's (``member_network``)
and refreshed by one broadcast per member over the exchange group (the K ranks holding
replica r: gloo on CPU, NCCL on GPU). The copies predict the rank's own batch as pfnet's do:
BatchNorm in train mode, so that right after a refresh a copy's logits on a shared batch are
the peer's own (codistillation then equals DML's step), dropout off (it would draw from the
rank's generator). What differs from pfnet: K members rather than two teams, and no overlap
on a side CUDA stream (the copy is used at the refresh step itself, not one step late).

Exact resume: a copy is a pure function of the peer's parameters at the last refresh, so each
member's checkpoint part carries its own parameters as of that refresh (``snapshot``) and the
step it happened; a resumed rank rebuilds every copy from its peers' parts.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from cohort.config import CohortConfig
from cohort.dist.mesh import CohortMesh
from cohort.models import member_network
from cohort.run import checkpoint_files
from cohort.run.files import RunDirError


def flat_parameters(net: nn.Module) -> torch.Tensor:
    """Every parameter of ``net`` as one float32 vector (its buffers stay: train-mode BatchNorm never reads them)."""
    return torch.cat([p.detach().reshape(-1).float() for p in net.parameters()])


def load_flat(net: nn.Module, flat: torch.Tensor) -> None:
    """Write ``flat`` (``flat_parameters``' layout) into ``net``'s parameters."""
    offset = 0
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
    if offset != flat.numel():
        raise ValueError(f"a copy of {offset} parameters received {flat.numel()}")


def as_copy(net: nn.Module) -> nn.Module:
    """``net`` as a frozen copy: train mode (BatchNorm on the batch's statistics, as pfnet's copy),
    dropout off, no gradients."""
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class PeerCopies:
    """This rank's copies of its peers' networks and its own parameters at the last refresh."""

    def __init__(self, config: CohortConfig, mesh: CohortMesh, net: nn.Module, meta: dict):
        self.mesh, self.net, self.member = mesh, net, mesh.member
        # Built as the peers' own (their input scaling included), under a forked generator: the
        # weights they draw are overwritten at the first refresh, and the stream the rank's
        # training goes on reading stays where it was.
        devices = [mesh.device] if mesh.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.copies = {
                j: as_copy(member_network(config, j, meta).to(mesh.device))
                for j in range(config.num_members)
                if j != self.member
            }
        self.refreshed_at: int | None = None
        """The optimiser step before which the copies were last refreshed (None: never yet)."""
        self.snapshot: torch.Tensor | None = None
        """This member's own parameters as its peers' copies hold them (for checkpoints)."""

    @property
    def ready(self) -> bool:
        return self.refreshed_at is not None

    def refresh(self, step: int) -> None:
        """Every member broadcasts its parameters over the exchange group; each rank loads its
        peers' into their copies (a collective of the K ranks holding this replica)."""
        group, transport = self.mesh.member_group, self.mesh.member_device
        for j in range(self.mesh.members):
            if j == self.member:
                flat = flat_parameters(self.net)
                dist.broadcast(flat.to(transport), group=group, group_src=j)
                self.snapshot = flat.clone()
            else:
                size = sum(p.numel() for p in self.copies[j].parameters())
                flat = torch.empty(size, dtype=torch.float32, device=transport)
                dist.broadcast(flat, group=group, group_src=j)
                load_flat(self.copies[j], flat.to(self.mesh.device))
        self.refreshed_at = step

    @torch.no_grad()
    def logits(self, x: torch.Tensor, autocast) -> dict[int, torch.Tensor]:
        """Each peer's copy's logits on ``x`` (float32, ``[B, C]``, or ``[n, B, C]`` for a
        BatchEnsemble of n)."""
        with autocast:
            return {j: copy(x).float() for j, copy in self.copies.items()}

    def state_dict(self) -> dict | None:
        """What a checkpoint part carries: the last refresh's step and this member's parameters then."""
        if not self.ready:
            return None
        return {"refreshed_at": self.refreshed_at, "snapshot": self.snapshot.cpu()}

    def load_state_dict(self, state: dict | None, folder: Path) -> str:
        """Rebuild the copies from the peers' parts of checkpoint ``folder`` (each member's
        ``snapshot``); this member's own comes from ``state``. The problem, or ""."""
        self.refreshed_at, self.snapshot = None, None
        if state is None:
            return ""
        try:
            for j, copy in self.copies.items():
                theirs = checkpoint_files.load_part(folder, j, "cpu", mmap=True).get("inputs", {}).get("peers")
                if theirs is None or theirs["refreshed_at"] != state["refreshed_at"]:
                    return (
                        f"{folder}/member-{j}.pt holds no parameters of member {j} as refreshed at step "
                        f"{state['refreshed_at']}; delete {folder} to resume from an earlier checkpoint"
                    )
                load_flat(copy, theirs["snapshot"].to(self.mesh.device))
        except RunDirError as error:
            return str(error)
        self.refreshed_at, self.snapshot = state["refreshed_at"], state["snapshot"].to(self.mesh.device)
        return ""
