"""The rules that span sections of the config, one named function each (as torchtitan's
``config/validation.py``). A section's own keys are checked by the section
(``DataConfig.validate`` and the like); ``CohortConfig.validate`` runs these after them,
in the order of ``RULES``. Each raises ``ConfigError``: one line naming the keys and the fix.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from cohort.config.checks import ConfigError
from cohort.config.names import CROP_FREE_POLICIES, auto_policies

if TYPE_CHECKING:
    from cohort.config.schema import CohortConfig


def members_fit_gpus(config: CohortConfig) -> None:
    """``train.members_per_gpu``: auto, or a divisor of K (a GPU holds the same replica of n members)."""
    packing = config.train.members_per_gpu  # an int or a string: building the tree checked its type
    if packing != "auto" and (isinstance(packing, str) or packing < 1 or config.num_members % packing):
        raise ConfigError(
            f"train.members_per_gpu must be auto or a divisor of the K={config.num_members} members "
            f"(a GPU holds the same replica of n members), got {packing!r}"
        )


def auto_policies_fit(config: CohortConfig) -> None:
    """``policies: auto`` needs a distinct policy for every member."""
    if config.policies == "auto":
        try:
            auto_policies(config.num_members)
        except ValueError as error:
            raise ConfigError(str(error)) from None


def member_names_unique(config: CohortConfig) -> None:
    names = set()
    for i, member in enumerate(config.members):
        if member.name in names:
            raise ConfigError(f"members.{i}.name {member.name!r} is used twice; give each member its own name")
        names.add(member.name)


def no_crop_after_random_resized_crop(config: CohortConfig) -> None:
    """``data.random_resized_crop`` already crops: members' policies may only flip, or nothing."""
    if not config.data.random_resized_crop:
        return
    for i, member in enumerate(config.members):
        if member.policy not in CROP_FREE_POLICIES:
            raise ConfigError(
                f"members.{i}.policy {member.policy} crops again after data.random_resized_crop; "
                f"use {' or '.join(CROP_FREE_POLICIES)} (ImageNet's recipe: flip)"
            )


def member_weights_name_terms(config: CohortConfig) -> None:
    """``members.<i>.loss``: weights >= 0 of terms the objective has."""
    terms = config.loss.terms()
    for i, member in enumerate(config.members):
        for name, weight in member.loss.items():
            if name not in terms:
                raise ConfigError(f"members.{i}.loss.{name} is not a term of the objective; valid: {', '.join(terms)}")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight < math.inf:
                raise ConfigError(f"members.{i}.loss.{name} must be a weight >= 0, got {weight!r}")


def margin_outweighs_mimicry(config: CohortConfig) -> None:
    """``loss.diversity.kind: margin`` pushes members apart only with β > λ."""
    if config.loss.diversity.kind != "margin":
        return
    for m in range(config.num_members):
        terms = config.enabled_terms(m)
        if "diversity" in terms and terms["diversity"] <= terms.get("mimicry", 0.0):
            beta, lam = terms["diversity"], terms["mimicry"]
            raise ConfigError(
                f"member {m}: loss.diversity.weight β={beta:g} must exceed loss.mimicry.weight λ={lam:g} with "
                f"kind margin: inside the margin the two add to (λ − β)·T²·KL, so β <= λ never pushes members "
                f"apart; e.g. loss.diversity.weight={2 * lam:g}"
            )


def every_member_has_a_term(config: CohortConfig) -> None:
    for m in range(config.num_members):
        if not config.enabled_terms(m):
            raise ConfigError(f"member {m}'s objective has no term with weight > 0; set one, e.g. loss.ce.weight=1")


def learners_name_their_peers(config: CohortConfig) -> None:
    """``members.<i>.learns_from``: existing members (by index or name), not the member itself,
    each once, and at least one while a term that reads peers has weight > 0 for the member."""
    for i, member in enumerate(config.members):
        chosen = config.learns_from(i)  # an unknown name or index is an error here
        if chosen is None:
            continue
        key = f"members.{i}.learns_from"
        if i in chosen:
            raise ConfigError(
                f"{key} names member {i} ({member.name}) itself; a member learns from its peers: name others, "
                f"or remove the key (every peer)"
            )
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"{key} names a member twice ({member.learns_from}); name each peer once")
        reading = [name for name in config.enabled_terms(i) if "peers" in config.loss.terms()[name].NEEDS]
        if not chosen and reading:
            raise ConfigError(
                f"{key} is empty, but member {i} ({member.name}) reads its peers through loss.{reading[0]} "
                f"(weight {config.term_weight(i, reading[0]):g}); name a peer, or set members.{i}.loss.{reading[0]}=0"
            )
        if member.batch_ensemble > 1 and config.batch_ensemble.siblings_are_peers:
            raise ConfigError(
                f"{key} on a BatchEnsemble member whose internal members read each other "
                f"(batch_ensemble.siblings_are_peers): each reads other rows; choose one of the two"
            )


def reported_members_exist(config: CohortConfig) -> None:
    """``reported_members``: existing members, each once."""
    reported = config.reported  # an unknown name or index is an error here
    if len(set(reported)) != len(reported):
        raise ConfigError(f"reported_members names a member twice ({config.reported_members}); name each once")


def distillation_has_teachers(config: CohortConfig) -> None:
    """``loss.distill`` and ``teacher.run_dir`` come together."""
    if config.distils and not config.teacher.enabled:
        raise ConfigError("loss.distill needs teachers: set teacher.run_dir=<a finished cohort run directory>")
    if config.teacher.enabled and not config.distils:
        raise ConfigError(
            f"teacher.run_dir is set ({config.teacher.run_dir}) but no member distils it; set "
            f"loss.distill.weight=0.9 loss.ce.weight=0.1 (the paper's α), or remove teacher.run_dir"
        )


def ods_shares_views(config: CohortConfig) -> None:
    """ODS and ConfODS give one x′ to every student, so the students must see one view."""
    perturbation = config.teacher.perturbation
    streams = {config.view_stream(m) for m in range(config.num_members)}
    if perturbation in ("ods", "confods") and len(streams) > 1:
        raise ConfigError(
            f"teacher.perturbation {perturbation} perturbs one clean view along one teacher's gradient and "
            f"gives that x′ to every student, but views: {config.views} gives the members different views; "
            f"set views=shared"
        )


def partners_in_shuffled_order(config: CohortConfig) -> None:
    """CS-KD's partners are drawn over the whole training set: ``page_local`` cannot lay them out."""
    if config.data.order == "page_local" and config.pairs_partners:
        raise ConfigError("data.order page_local cannot lay out CS-KD's partners (loss.cskd); use data.order=shuffle")


def partners_need_labels(config: CohortConfig) -> None:
    """CS-KD draws an anchor's partner from its class, which a hidden label does not reveal."""
    if config.data.semi_supervised and config.pairs_partners:
        raise ConfigError(
            "loss.cskd draws each anchor's partner from its class, which an unlabelled anchor "
            "does not reveal; train CS-KD with every label (data.labelled_fraction=1)"
        )


def min_logit_needs_labels(config: CohortConfig) -> None:
    """KDCL's ``ensemble_min_logit`` target reads every sample's label."""
    if config.data.semi_supervised and config.reads_peers and config.loss.mimicry.target == "ensemble_min_logit":
        raise ConfigError(
            "loss.mimicry.target ensemble_min_logit reads every sample's label; with hidden "
            "labels use ensemble_mean (or data.labelled_fraction=1)"
        )


def partners_batch_norm(config: CohortConfig) -> None:
    """CS-KD's partner forward runs in train mode: BatchNorm needs two partners at least."""
    batch_size = config.data.batch_size
    if config.pairs_partners and batch_size < 2:
        raise ConfigError(
            f"data.batch_size {batch_size} is too small for loss.cskd: the B partners run their "
            f"own train-mode forward, whose BatchNorm needs B >= 2; set data.batch_size >= 2 "
            f"(each step then reads batch_size anchors and batch_size partners)"
        )


def exchange_has_readers(config: CohortConfig) -> None:
    """``exchange:`` settings mean something only when some member reads its peers."""
    changed = config.exchange.mode != "logits" or config.exchange.every != 1
    if changed and not config.reads_peers:
        raise ConfigError(
            f"exchange.mode {config.exchange.mode} (every {config.exchange.every}) has nothing to exchange: no "
            f"member reads its peers (loss.mimicry and loss.diversity have weight 0); set loss.mimicry.weight, "
            f"or leave exchange: at its defaults"
        )


def own_orders_share_no_batch(config: CohortConfig) -> None:
    """``data.sample_order: per_member`` gives each member other samples at a step: refused where
    a term compares members on the same samples at the same step (the logit exchange, whose
    sample-index guard would stop the run; ODS's one x′ for every student)."""
    if config.data.sample_order != "per_member":
        return
    if config.exchanges_logits:
        raise ConfigError(
            "data.sample_order per_member gives each member other samples at a step, but the members "
            "all-gather their logits on the batch (exchange.mode logits, for loss.mimicry or loss.diversity); "
            "use exchange.mode=codistill (stale copies compute the peers' logits on each member's own batch), "
            "or data.sample_order=shared"
        )
    if config.distils and config.teacher.perturbation in ("ods", "confods"):
        raise ConfigError(
            f"data.sample_order per_member gives each student other samples, but teacher.perturbation "
            f"{config.teacher.perturbation} gives one x′ to every student; use data.sample_order=shared"
        )


TRACKABLE_NAME = re.compile(r"[\w.\- ]+")
"""The member names MLflow takes inside a metric's key (``<split>/<metric>/<member>``): letters,
digits, ``_ - .`` and spaces (``mlflow/utils/validation.py``, ``validate_param_and_metric_name``)."""


def tracked_member_names(config: CohortConfig) -> None:
    """With MLflow on, every member's name goes into metric keys: MLflow refuses other characters
    (and a name that reads as a path: ``.``, ``..``), and the run would lose its metrics mid-way."""
    if config.track.mlflow is None:
        return
    for i, member in enumerate(config.members):
        if not TRACKABLE_NAME.fullmatch(member.name) or member.name in (".", ".."):
            fixed = re.sub(r"[^\w.\- ]+", "-", member.name).strip(".-") or f"m{i}"
            raise ConfigError(
                f"members.{i}.name {member.name!r} cannot name MLflow metrics (track.mlflow is set): use letters, "
                f"digits, _ - . and spaces, e.g. members.{i}.name={fixed}"
            )


RULES = (
    members_fit_gpus,
    auto_policies_fit,
    member_names_unique,
    no_crop_after_random_resized_crop,
    member_weights_name_terms,
    margin_outweighs_mimicry,
    every_member_has_a_term,
    learners_name_their_peers,
    reported_members_exist,
    distillation_has_teachers,
    ods_shares_views,
    partners_in_shuffled_order,
    partners_need_labels,
    min_logit_needs_labels,
    partners_batch_norm,
    exchange_has_readers,
    own_orders_share_no_batch,
    tracked_member_names,
)
"""Every rule, in the order ``CohortConfig.validate`` runs them."""
