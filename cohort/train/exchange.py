"""The logit exchange: every step, the members' replica-r ranks all-gather their logits.

The batch's sample indices travel in the same message (one extra column), which makes
the desync guard free: every member must have trained on the same samples at every step.
Indices, not labels: two batches can share their labels, never their indices, and a
hidden label (semi-supervised runs) must not travel at all.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cohort.errors import CohortError


class DesyncError(CohortError, RuntimeError):
    """Members disagree on the batch (different labels at the same step)."""


class NonFiniteError(CohortError, RuntimeError):
    """A member produced non-finite logits or loss (its own rank's, unless the exchange found it)."""

    shared = False


class LogitExchange:
    """All-gathers detached logits (and sample indices) over the member group: each member's
    ``[B, C]``, or ``[n, B, C]`` for a BatchEnsemble member of n internal members."""

    def __init__(
        self,
        group: dist.ProcessGroup | None,
        member: int,
        num_members: int,
        stop_on_nonfinite: bool = True,
        transport: torch.device | None = None,
        sizes: list[int] | None = None,
        siblings_are_peers: bool = False,
    ):
        """``transport``: the device the group's backend reads (the host for gloo); None: the logits' own.
        ``sizes``: each member's internal members (``members.<i>.batch_ensemble``; None: all 1).
        ``siblings_are_peers``: a BatchEnsemble's internal members read each other as peers."""
        self.group, self.member, self.num_members = group, member, num_members
        self.stop_on_nonfinite = stop_on_nonfinite
        self.transport = transport
        self.sizes = list(sizes or [1] * num_members)
        self.siblings_are_peers = siblings_are_peers
        start = sum(self.sizes[:member])
        self.own_rows = range(start, start + self.sizes[member])

    def gather(self, logits: torch.Tensor, indices: torch.Tensor, step: int) -> torch.Tensor:
        """Every internal member's logits ``[M, B, C]`` (detached; M = K for plain members, the
        sum of the members' n with BatchEnsembles, in ``CohortConfig.member_names``' order);
        checks the sample indices and (unless the run skips non-finite steps instead) finiteness."""
        # The int32 index's bits ride as a float32 column: exact for any index below 2³¹
        # (a float32 value is exact only below 2²⁴), and still one collective per step.
        rows = logits.detach().float().reshape(-1, logits.shape[-1])  # [n·B, C], member-major
        column = indices.to(device=logits.device, dtype=torch.int32).view(torch.float32)
        message = torch.cat([rows, column.repeat(len(rows) // len(column)).unsqueeze(1)], dim=1)
        batch = len(column)
        widest = max(self.sizes) * batch
        if len(message) < widest:  # all_gather sends equal shapes: pad to the largest member's rows
            message = torch.cat([message, message[:batch].repeat((widest - len(message)) // batch, 1)])
        if self.num_members == 1:
            gathered = message.unsqueeze(0)
        else:
            # Members sharing a GPU exchange over gloo: through host memory, and back.
            message = message.to(self.transport or message.device)
            parts = [torch.empty_like(message) for _ in range(self.num_members)]
            dist.all_gather(parts, message.contiguous(), group=self.group)
            gathered = torch.stack(parts).to(logits.device)
        sent = [gathered[k, : n * batch] for k, n in enumerate(self.sizes)]  # each member's own rows
        finite = torch.stack([torch.isfinite(part[:, :-1]).all() for part in sent])
        if self.stop_on_nonfinite and not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            # Every rank of the exchange sees it: rank 0 alone reports it.
            raise NonFiniteError(
                f"member {bad} produced non-finite logits at step {step}; lower the learning rate or check the data",
                shared=True,
            )
        all_indices = gathered[:, :batch, -1].contiguous().view(torch.int32)
        mismatch = (all_indices != all_indices[0]).any(dim=1)
        if bool(mismatch.any()):
            bad = int(mismatch.nonzero()[0])
            raise DesyncError(
                f"member {bad} trained on different samples than member 0 at step {step}; "
                f"the cohort's loaders are out of step"
            )
        return torch.cat([part[:, :-1].reshape(-1, batch, part.shape[1] - 1) for part in sent])

    def peers(self, all_logits: torch.Tensor) -> torch.Tensor:
        """What this member's objective reads as peers: the other members' logits ``[M−1, B, C]``;
        for a BatchEnsemble of n, each internal member's ``[n, P, B, C]``: the other members'
        networks (P = M − n), or with ``siblings_are_peers`` every network but its own (P = M − 1)."""
        own = self.own_rows
        if len(own) == 1:
            return all_logits[[j for j in range(len(all_logits)) if j != own[0]]]
        if self.siblings_are_peers:
            return torch.stack([all_logits[[j for j in range(len(all_logits)) if j != i]] for i in own])
        others = all_logits[[j for j in range(len(all_logits)) if j not in own]]
        return others.unsqueeze(0).expand(len(own), *others.shape)
