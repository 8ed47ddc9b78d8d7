"""A cohort's logits on a split, in file order: in one process (``cohort eval``), or on the
K×R layout, each rank predicting its replica's shard with its member (training's evaluation
and ``cohort eval --distributed``)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cohort.config import CohortConfig
from cohort.data.batch import evaluation_logits, model_input
from cohort.data.loader import MemberLoader
from cohort.models.batch_ensemble import as_members


@torch.no_grad()
def predict(models: list[torch.nn.Module], beton: Path, config: CohortConfig) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[M, N, C]`` of every model's networks on a ``.beton`` in file order (this process,
    on the CPU; M counts a BatchEnsemble's internal members, ``CohortConfig.member_names``), and its labels."""
    loader = MemberLoader.for_evaluation(config, beton, member=0, replica=0, replicas=1, device=torch.device("cpu"))
    logits, labels = [[] for _ in models], []
    for batch in loader.epoch(0):
        x = model_input(batch.images)
        for m, model in enumerate(models):
            logits[m].append(as_members(evaluation_logits(model, x, config.train.flip_tta)))
        labels.append(batch.labels.clone())
    return torch.cat([torch.cat(chunks, dim=1) for chunks in logits]).numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def cohort_logits(
    net: torch.nn.Module,
    loader: MemberLoader,
    mesh,
    flip_tta: bool,
    autocast: AbstractContextManager | None = None,
    channels_last: bool = False,
    sizes: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The cohort's logits ``[M, N, C]`` on a split, in file order, and the labels ``[N]``; a
    collective. Each rank predicts its replica's shard with its member's ``net`` (in eval
    mode); the replicas' shards are gathered, then the members' logits (over the exchange
    group, on the device its backend reads). ``sizes``: each member's internal members (its
    ``batch_ensemble``; None: all 1), M their sum, in ``CohortConfig.member_names``' order."""
    sizes = list(sizes or [1] * mesh.members)
    logits, labels = [], []
    for batch in loader.epoch(0):
        with autocast or nullcontext():
            out = evaluation_logits(net, model_input(batch.images, channels_last), flip_tta)
        logits.append(as_members(out).transpose(0, 1))  # samples first, for the shards: [b, n, C]
        labels.append(batch.labels.clone())
    local, local_labels = torch.cat(logits), torch.cat(labels)
    if mesh.replicas > 1:
        member_logits = torch.from_numpy(
            loader.unshard(all_gather(local, mesh.replica_group, mesh.replicas).cpu().numpy())
        )
        all_labels = loader.unshard(all_gather(local_labels, mesh.replica_group, mesh.replicas).cpu().numpy())
    else:
        member_logits, all_labels = local.cpu()[: loader.num_samples], local_labels.cpu().numpy()[: loader.num_samples]
    # all_gather sends equal shapes: a member of fewer internal members pads to the largest's.
    padded = torch.zeros(member_logits.shape[0], max(sizes), member_logits.shape[2], dtype=member_logits.dtype)
    padded[:, : member_logits.shape[1]] = member_logits
    gathered = all_gather(padded.to(mesh.member_device), mesh.member_group, mesh.members).cpu()
    return torch.cat([gathered[k, :, :n].transpose(0, 1) for k, n in enumerate(sizes)]).numpy(), all_labels


def all_gather(tensor: torch.Tensor, group, size: int) -> torch.Tensor:
    """``[size, ...]``: every rank's ``tensor`` of the group, stacked in group order."""
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.stack(parts)
