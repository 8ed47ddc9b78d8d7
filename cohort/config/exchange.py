"""How members read each other: ``exchange:``. Every step by default, the members all-gather
their logits (``logits``); or every k-th step; or each keeps stale copies of its peers'
networks, refreshed from their weights every few steps (``codistill``). ``cohort.train.inputs``
provides the peers' logits either way; the terms that read them do not change."""

from __future__ import annotations

from dataclasses import dataclass

from cohort.config.checks import ConfigError, choose

EXCHANGE_MODES = ("logits", "codistill")


@dataclass
class ExchangeConfig:
    mode: str = "logits"
    """``logits``: the members all-gather their logits on the batch (DML's exchange, on every
    ``every``-th step); ``codistill``: every rank holds frozen copies of its peers' networks,
    refreshed from their current weights every ``refresh_every`` steps after ``burn_in_steps``,
    and computes the peers' logits on its own batch (Anil et al. 2018; ``cohort.train.codistill``)."""
    every: int = 1
    """``logits``: gather on every k-th optimiser step only (step % k == 0); the terms that read
    peers act on those steps alone, at their configured weight (not scaled by k: a k-times larger
    mimicry weight on one step in k is a k-times larger gradient kick, not the same objective).
    1: every step, DML as published."""
    refresh_every: int = 50
    """``codistill``: optimiser steps between two refreshes of the copies (pfnet's
    ``comm_model_freq``, 50)."""
    burn_in_steps: int = 0
    """``codistill``: optimiser steps before the first refresh; no term reads peers before it
    (Anil et al. train the members alone first; pfnet's ``burnin_epoch``, in steps here)."""

    def validate(self) -> None:
        choose("exchange.mode", self.mode, EXCHANGE_MODES)
        if self.every < 1:
            raise ConfigError(f"exchange.every must be >= 1 (1: every step), got {self.every}")
        if self.refresh_every < 1:
            raise ConfigError(
                f"exchange.refresh_every must be >= 1 (steps between refreshes), got {self.refresh_every}"
            )
        if self.burn_in_steps < 0:
            raise ConfigError(f"exchange.burn_in_steps must be >= 0, got {self.burn_in_steps}")
        if self.mode == "codistill" and self.every != 1:
            raise ConfigError(
                f"exchange.every {self.every} is for mode logits; codistill refreshes its copies every "
                f"exchange.refresh_every steps and reads them at every step: set exchange.every=1"
            )

    def gathers_at(self, step: int) -> bool:
        """``logits``: whether optimiser step ``step`` (counted from 0) all-gathers."""
        return step % self.every == 0

    def refreshes_at(self, step: int) -> bool:
        """``codistill``: whether the copies are refreshed before optimiser step ``step``."""
        return step >= self.burn_in_steps and (step - self.burn_in_steps) % self.refresh_every == 0
