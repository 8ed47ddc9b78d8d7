"""``train.compile``: the member's training forward through ``torch.compile``.

Only the module the training step calls (``Trainer.model``: the network, or its DDP wrapper)
is compiled; the network itself (``Trainer.net``) stays the plain module, so that
checkpoints keep its state_dict keys (``torch.compile`` returns an ``OptimizedModule``
whose own state_dict prefixes every key with ``_orig_mod.``) and a checkpoint of a
compiled member loads into an uncompiled one and back. Evaluation, CS-KD's partner
forward and teachers run the plain network: they see other shapes or modes, each of which
would cost a compilation of its own. DDP is compiled from outside, as PyTorch's
"torch.compile with DDP" notes recommend (its DDPOptimizer splits the graph at the
all-reduce buckets).
"""

from __future__ import annotations

import torch


def compiled(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile(model)`` (the default inductor backend) when ``enabled``, else ``model``."""
    return torch.compile(model) if enabled else model
