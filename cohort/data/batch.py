"""What a loader hands the training step: a ``Batch``, and the one way it becomes model input.

A batch is uint8 images in [0, 255] (normalisation belongs to the model's first layer,
so input-space perturbations have a pixel scale), labels with ``IGNORE_LABEL`` where a
label is hidden (a term can then never read it), the sample indices the cohort's order
chose (the desync guard compares them across members), and ``anchors``: the first
``anchors`` rows are the batch proper; rows after them, if any, are partner images that
some methods read (CS-KD's same-class partners).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

IGNORE_LABEL = -100
"""The label of a sample whose label is hidden (``F.cross_entropy``'s default ignore_index)."""


@dataclass
class Batch:
    images: torch.Tensor
    """uint8 ``[N, C, H, W]`` (FFCV reuses its buffers: clone what you keep)."""
    labels: torch.Tensor
    """int64 ``[N]``; ``IGNORE_LABEL`` where the label is hidden."""
    indices: torch.Tensor
    """int64 ``[N]``: each row's sample index in the ``.beton`` file."""
    anchors: int
    """Rows ``[:anchors]`` are the batch proper; the rest are partners."""


def device_formats(bf16: bool, channels_last: bool, device: torch.device) -> tuple[AbstractContextManager, bool]:
    """(bf16 autocast or a null context, whether channels_last is on) for models on ``device``:
    ``train.bf16`` and ``train.channels_last`` apply on CUDA only. Training (and its teachers)
    and ``cohort eval --distributed`` both take them from here."""
    on_cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and on_cuda else nullcontext()
    return autocast, channels_last and on_cuda


def model_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` → float32 in [0, 1], channels_last when asked (CUDA convolutions
    run faster in it; on the CPU the trainer leaves it off). Training, evaluation and
    ``cohort eval`` all feed models through this one function."""
    x = images.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def evaluation_logits(net: torch.nn.Module, x: torch.Tensor, flip_tta: bool = False) -> torch.Tensor:
    """The logits of ``net`` on model input ``x`` (float32); with ``flip_tta`` the mean of its
    logits on ``x`` and on its left-right mirror (``train.flip_tta``). Evaluation in training
    and ``cohort eval`` both use it."""
    logits = net(x).float()
    if flip_tta:
        logits = (logits + net(torch.flip(x, dims=[3])).float()) / 2
    return logits
