"""The data a cohort trains on and how it is read: ``data:`` and its ``resolution:``.
``cohort.data`` writes the files and builds the loaders from these settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cohort.config.checks import ConfigError, choose


@dataclass
class ResolutionConfig:
    """Image resolutions of ImageNet-style training (ffcv-imagenet's progressive resizing):
    training images are decoded at ``min_res`` until epoch ``start_ramp``, then at a
    resolution that grows linearly to ``max_res`` at ``end_ramp`` (multiples of 32;
    ``progressive_resolution``); evaluation at ``eval_res``.
    0 means the data folder's ``image_size``. Used with ``data.random_resized_crop``."""

    min_res: int = 0
    """The training resolution until ``start_ramp`` (0: the data's ``image_size`` throughout)."""
    max_res: int = 0
    """The training resolution from ``end_ramp`` on."""
    start_ramp: int = 0
    """The epoch at which the resolution starts to grow."""
    end_ramp: int = 0
    """The epoch at which it reaches ``max_res``."""
    eval_res: int = 0
    """Evaluation: the centre crop (224/256 of the shorter side) resized to this."""

    def validate(self) -> None:
        r = self
        if min(r.min_res, r.max_res, r.start_ramp, r.end_ramp, r.eval_res) < 0 or r.start_ramp > r.end_ramp:
            raise ConfigError(f"data.resolution: need sizes >= 0 and start_ramp <= end_ramp, got {r}")
        if (r.min_res == 0) != (r.max_res == 0) or r.min_res > r.max_res:
            raise ConfigError(
                f"data.resolution: set both min_res <= max_res (or neither), got min_res {r.min_res}, "
                f"max_res {r.max_res}"
            )

    def at(self, epoch: int, image_size: int) -> int:
        """The training resolution at ``epoch`` for a data folder of ``image_size``."""
        if self.min_res == 0:
            return image_size
        return progressive_resolution(epoch, self.min_res, self.max_res, self.start_ramp, self.end_ramp)


def progressive_resolution(epoch: int, min_res: int, max_res: int, start_ramp: int, end_ramp: int) -> int:
    """ffcv-imagenet's training resolution at ``epoch`` (``train_imagenet.py``, ``get_resolution``):
    ``min_res`` up to ``start_ramp``, ``max_res`` from ``end_ramp``, and between them the linear
    ramp rounded to a multiple of 32. A pure function of the epoch: a resumed run trains at
    the same resolutions."""
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    value = float(np.interp(epoch, [start_ramp, end_ramp], [min_res, max_res]))
    return int(np.round(value / 32)) * 32


INPUT_SCALINGS = ("dataset", "unit")
SAMPLE_ORDERS = ("shared", "per_member")
"""``data.normalize``'s choices."""


@dataclass
class DataConfig:
    root: str = "data/digits"
    """Folder holding ``train.beton``, ``val.beton``, ``test.beton`` and ``meta.json``."""
    dataset: str = "digits"
    """What ``cohort data`` writes into ``root`` if it is missing. Only ``digits`` is
    written automatically (it needs no download); others are an error naming the command."""
    batch_size: int = 64
    """Per replica: a member with R replicas sees R × batch_size images per step."""
    eval_batch_size: int = 256
    """Per rank, when predicting val and test (no gradients: larger than training's)."""
    num_workers: int = 2
    """FFCV decoding threads per rank (results do not depend on it)."""
    labelled_fraction: float = 1.0
    """Semi-supervised training (DML §3.4): the fraction of training samples whose label the
    objective may read, chosen class-balanced with ``labelled_seed`` and fixed for the run;
    the others keep their images, their labels hidden (``cohort.data.labelled``)."""
    labelled_indices: str = ""
    """Or a file naming the labelled training samples: ``.npy`` or text, one index per line."""
    labelled_seed: int = 0
    """Seed of the class-balanced choice (not the cohort's seed: seeds of a study share one labelled set);
    >= 0, as numpy's seeds."""
    random_resized_crop: bool = False
    """ImageNet's training augmentation: each training image is a random-resized crop (area
    8–100 %, aspect ratio 3/4–4/3), seeded like every other augmentation and decoded at the
    epoch's resolution (``data.resolution``; ``cohort.data.decoders``). Members' policies
    then apply to the crop: ``flip`` (ImageNet's) or ``none``."""
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    """ImageNet-style progressive resizing (``ResolutionConfig``), with ``random_resized_crop``."""
    order: str = "shuffle"
    """The training order: ``shuffle`` (a full permutation per epoch) or ``page_local`` (the
    file's pages in a random order, samples shuffled within each run of ``page_window``
    pages: for data larger than memory; ``cohort.data.order.page_local_order``). Either way
    every member reads the same samples at every step and replicas stay disjoint."""
    sample_order: str = "shared"
    """Whose permutation the training order is: ``shared`` (one per epoch from the cohort seed:
    every member reads the same samples at every step, as mimicry needs) or ``per_member``
    (each member its own, from the cohort seed and the member; a member's replicas still share
    it): for cohorts whose members never compare logits on the same samples at the same step,
    independent ones (a deep ensemble of separate runs) and codistillation (``exchange.mode``).
    Named apart from ``order``, which says how a permutation is laid out."""
    page_window: int = 8
    """``page_local``: how many of the file's pages (8 MiB each) are shuffled together."""
    os_cache: bool = True
    """FFCV reads the files through the OS page cache (true), or reads the pages a batch needs
    itself (false: for data larger than memory, best with ``order: page_local``)."""
    normalize: str = "dataset"
    """The input scaling of every member's first layer: ``dataset`` ((x − mean) / std per
    channel, the training split's statistics from ``meta.json``) or ``unit`` (the pixels in
    [0, 1] and nothing more, as google/uncertainty-baselines' (Fashion-)MNIST LeNet-5 reads
    them: ``configs/fashion_lenet5*.yaml``). Checkpoints hold the scaling they trained with."""

    def input_statistics(self, meta: dict) -> tuple[list[float], list[float]]:
        """The per-channel (mean, std) that ``normalize`` puts in front of each network."""
        if self.normalize == "unit":
            return [0.0] * len(meta["mean"]), [1.0] * len(meta["std"])
        return list(meta["mean"]), list(meta["std"])

    @property
    def semi_supervised(self) -> bool:
        return self.labelled_fraction < 1 or bool(self.labelled_indices)

    def validate(self) -> None:
        self.resolution.validate()
        choose("data.order", self.order, ("shuffle", "page_local"))
        choose("data.sample_order", self.sample_order, SAMPLE_ORDERS)
        choose("data.normalize", self.normalize, INPUT_SCALINGS)
        if self.page_window < 1:
            raise ConfigError(f"data.page_window must be >= 1, got {self.page_window}")
        if self.labelled_seed < 0:
            raise ConfigError(
                f"data.labelled_seed must be >= 0 (numpy's seeds are not negative), got {self.labelled_seed}"
            )
        if not 0 < self.labelled_fraction <= 1:
            raise ConfigError(f"data.labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if self.labelled_indices and self.labelled_fraction < 1:
            raise ConfigError(
                "data.labelled_indices and data.labelled_fraction both choose the labelled samples; "
                "set one of them (labelled_fraction=1 with a file)"
            )
        if self.batch_size < 1 or self.eval_batch_size < 1 or self.num_workers < 1:
            raise ConfigError("data: need batch_size >= 1, eval_batch_size >= 1, num_workers >= 1")
