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
    """All-gathers detached ``[B, C]`` logits (and sample indices) over the member group."""

    def __init__(
        self,
        group: dist.ProcessGroup | None,
        member: int,
        num_members: int,
        stop_on_nonfinite: bool = True,
        transport: torch.device | None = None,
    ):
        """``transport``: the device the group's backend reads (the host for gloo); None: the logits' own."""
        self.group, self.member, self.num_members = group, member, num_members
        self.stop_on_nonfinite = stop_on_nonfinite
        self.transport = transport

    def gather(self, logits: torch.Tensor, indices: torch.Tensor, step: int) -> torch.Tensor:
        """All members' logits ``[K, B, C]`` (detached); checks the sample indices and (unless
        the run skips non-finite steps instead) finiteness."""
        # The int32 index's bits ride as a float32 column: exact for any index below 2³¹
        # (a float32 value is exact only below 2²⁴), and still one collective per step.
        column = indices.to(device=logits.device, dtype=torch.int32).view(torch.float32).unsqueeze(1)
        message = torch.cat([logits.detach().float(), column], dim=1)
        if self.num_members == 1:
            gathered = message.unsqueeze(0)
        else:
            # Members sharing a GPU exchange over gloo: through host memory, and back.
            message = message.to(self.transport or message.device)
            parts = [torch.empty_like(message) for _ in range(self.num_members)]
            dist.all_gather(parts, message.contiguous(), group=self.group)
            gathered = torch.stack(parts).to(logits.device)
        all_logits, all_indices = gathered[..., :-1], gathered[..., -1].contiguous().view(torch.int32)
        finite = torch.isfinite(all_logits).flatten(1).all(dim=1)
        if self.stop_on_nonfinite and not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            # Every rank of the exchange sees it: rank 0 alone reports it.
            raise NonFiniteError(
                f"member {bad} produced non-finite logits at step {step}; lower the learning rate or check the data",
                shared=True,
            )
        mismatch = (all_indices != all_indices[0]).any(dim=1)
        if bool(mismatch.any()):
            bad = int(mismatch.nonzero()[0])
            raise DesyncError(
                f"member {bad} trained on different samples than member 0 at step {step}; "
                f"the cohort's loaders are out of step"
            )
        return all_logits

    def peers(self, all_logits: torch.Tensor) -> torch.Tensor:
        """The other members' logits ``[K−1, B, C]``."""
        keep = [j for j in range(self.num_members) if j != self.member]
        return all_logits[keep]
