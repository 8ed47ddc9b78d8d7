"""BatchEnsemble: n networks in one, sharing every weight W, each with its own rank-1 factors
(Wen, Tran and Ba, "BatchEnsemble", ICLR 2020; the student of Nam et al., "Diversity Matters
When Learning From Ensembles", NeurIPS 2021).

Internal member j's layer computes ((x ⊙ r_j) W) ⊙ s_j (+ b_j): the shared layer W between an
input factor r_j and an output factor s_j, and a bias b_j of its own where the layer has a bias
(the classifier). As the official code (cs-giung/giung2, ``giung2/layers/conv.py``
``Conv2d_BatchEnsemble`` and ``linear.py`` ``Linear_BatchEnsemble``), one forward serves all
n: the batch arrives repeated n times, member-major (rows [jB, (j+1)B) are member j's), each
block is scaled by its member's factors around one shared convolution or matrix product, and
BatchNorm stays shared (its statistics are the repeated batch's).

``BatchEnsemble`` repeats the batch itself and returns the members' logits as ``[n, B, C]``, so
the trainer and evaluation see n members where the config has one (``members.<i>.batch_ensemble``).

Factors start as N(1, 0.5) (giung2's default ``ALPHA_INITIALIZER`` / ``GAMMA_INITIALIZER``)
or, as uncertainty-baselines' ``random_sign_init`` > 0, as ±1 with P(+1) = p; member biases
start at 0. The optimiser groups of the factors are ``cohort.train.optim.parameter_groups``'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FACTOR_NAMES = ("input_factor", "output_factor")
"""The fast weights' parameter names (giung2's ``SUFFIX_BE``: ``alpha_be``, ``gamma_be``); member
biases are not among them and train as the shared weights do, as there."""

SHARED_WITH_WEIGHTS = (nn.modules.batchnorm._BatchNorm,)
"""Layers with weights that the internal members share as they are (as the official code's BatchNorm)."""


@dataclass(frozen=True)
class FactorInit:
    """How the rank-1 factors start: ``normal`` N(1, std), or ``random_sign`` ±1 with P(+1) = p."""

    kind: str = "normal"
    std: float = 0.5
    sign_probability: float = 0.5

    def fill(self, factor: torch.Tensor) -> None:
        with torch.no_grad():
            if self.kind == "normal":
                factor.normal_(1.0, self.std)
            elif self.kind == "random_sign":
                factor.bernoulli_(self.sign_probability).mul_(2.0).sub_(1.0)
            else:
                raise ValueError(f"unknown factor init {self.kind!r}")


def factor_init(config) -> FactorInit:
    """The factors' start from the config's ``batch_ensemble:`` section (``BatchEnsembleConfig``)."""
    return FactorInit(config.init, config.init_std, config.sign_probability)


DEFAULT_FACTOR_INIT = FactorInit()


class _BatchEnsembleLayer(nn.Module):
    """A shared layer between per-member input and output factors (and per-member biases)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, size: int, inputs: int, outputs: int, init: FactorInit):
        super().__init__()
        self.size = size
        self.layer = layer
        self.input_factor = nn.Parameter(torch.empty(size, inputs))
        self.output_factor = nn.Parameter(torch.empty(size, outputs))
        init.fill(self.input_factor)
        init.fill(self.output_factor)
        if layer.bias is not None:  # a bias of each member's own instead of the shared one, as giung2's
            layer.bias = None
            self.member_bias = nn.Parameter(torch.zeros(size, outputs))
        else:
            self.register_parameter("member_bias", None)

    def per_member(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n·B, ...]`` as ``[n, B, ...]``; a batch of another row count is an error."""
        if x.shape[0] % self.size:
            raise ValueError(
                f"a BatchEnsemble layer of {self.size} members got {x.shape[0]} rows, not a multiple of "
                f"{self.size}: feed it the batch repeated {self.size} times, member-major (BatchEnsemble does)"
            )
        return x.view(self.size, -1, *x.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (self.size, 1, -1) + (1,) * (x.dim() - 2)  # factors broadcast over rows and pixels
        scaled = (self.per_member(x) * self.input_factor.view(shape)).flatten(0, 1)
        out = self.per_member(self.layer(scaled)) * self.output_factor.view(shape)
        if self.member_bias is not None:
            out = out + self.member_bias.view(shape)
        return out.flatten(0, 1)


class BatchEnsembleConv2d(_BatchEnsembleLayer):
    """A convolution shared by ``size`` members, each with factors over its input and output channels."""

    def __init__(self, conv: nn.Conv2d, size: int, init: FactorInit):
        super().__init__(conv, size, conv.in_channels, conv.out_channels, init)


class BatchEnsembleLinear(_BatchEnsembleLayer):
    """A linear layer shared by ``size`` members, each with factors over its input and output features."""

    def __init__(self, linear: nn.Linear, size: int, init: FactorInit):
        super().__init__(linear, size, linear.in_features, linear.out_features, init)


def share_layers(net: nn.Module, size: int, init: FactorInit, where: str = "") -> nn.Module:
    """``net`` with every ``nn.Conv2d`` and ``nn.Linear`` turned into its BatchEnsemble layer of
    ``size`` members (in module order, so factors draw from the RNG in a fixed order). A layer
    with weights of another kind (LayerNorm, attention, an embedding) has no BatchEnsemble form
    here: a ValueError naming it."""
    for name, child in net.named_children():
        path = f"{where}.{name}" if where else name
        if isinstance(child, nn.Conv2d):
            setattr(net, name, BatchEnsembleConv2d(child, size, init))
        elif isinstance(child, nn.Linear):
            setattr(net, name, BatchEnsembleLinear(child, size, init))
        elif isinstance(child, SHARED_WITH_WEIGHTS):
            continue
        else:
            own = [n for n, _ in child.named_parameters(recurse=False)]
            if own:
                raise ValueError(
                    f"its layer {path} ({type(child).__name__}) has weights ({', '.join(own)}) that are neither a "
                    f"convolution, a linear layer nor BatchNorm, so BatchEnsemble cannot give each member factors"
                )
            share_layers(child, size, init, path)
    return net


class BatchEnsemble(nn.Module):
    """``size`` internal members in one network: ``forward`` repeats the batch ``size`` times,
    member-major, and returns each member's logits, ``[size, B, C]``."""

    def __init__(self, net: nn.Module, size: int, init: FactorInit = DEFAULT_FACTOR_INIT):
        super().__init__()
        if size < 2:
            raise ValueError(f"a BatchEnsemble has at least 2 members, got {size} (1 is the plain network)")
        self.size = size
        self.net = share_layers(net, size, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x.repeat(self.size, *([1] * (x.dim() - 1))))
        return logits.view(self.size, -1, *logits.shape[1:])


def as_members(logits: torch.Tensor) -> torch.Tensor:
    """A network's logits as ``[n, B, C]``: a BatchEnsemble's as they are, a plain network's ``[B, C]`` as n = 1."""
    return logits if logits.dim() == 3 else logits.unsqueeze(0)
