"""One FFCV loader per member and split, reading the cohort's shared sample order."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import numba
import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader
from ffcv.pipeline.compiler import Compiler
from ffcv.transforms import Squeeze, ToDevice, ToTensor, ToTorchImage

from cohort.config import CohortConfig, ResolutionConfig
from cohort.data.batch import IGNORE_LABEL, Batch
from cohort.data.decoders import SeededRandomResizedCrop
from cohort.data.folder import read_meta
from cohort.data.labelled import train_labels
from cohort.data.order import CohortOrder, order_stream, sample_pages, unshard
from cohort.data.policies import build_policy
from cohort.data.randomness import AugmentationClock


def _set_decoder_threads(cls, threads: int) -> None:
    """FFCV's ``Compiler.set_num_threads`` without its ``torch.set_num_threads`` call.

    FFCV 1.0.2 also sets torch's intra-op threads to the loader's worker count (at every
    epoch, from its loader thread), which ties the model's float results to
    ``data.num_workers``. Decoding threads and model threads are kept apart here, so a run
    is bit-identical whatever the worker count (tests/scenarios/test_train_multiprocess.py).
    """
    cls.num_threads = min(threads if threads >= 1 else numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(cls.num_threads)


Compiler.set_num_threads = classmethod(_set_decoder_threads)

PREFETCH_STOP_TIMEOUT_S = 60.0
"""How long closing an epoch waits for FFCV's prefetch thread to finish its batches in flight
(it checks for a stop every 0.5 s once its queue is full; a few batches' decoding at most)."""


def beton_samples(path: Path) -> int:
    """The samples of a ``.beton``, from its header."""
    from cohort.data.beton import HEADER

    return int(np.fromfile(path, dtype=HEADER, count=1)[0]["num_samples"])


def stop_prefetch(batches) -> None:
    """Stop an epoch's FFCV prefetch thread (an ``EpochIterator``) and wait until it has.

    A thread still inside the compiled pipeline when the process exits runs numba's
    TBB-parallel code while the C++ runtime tears TBB down: the process aborts with
    "terminate called without an active exception" after training finished
    (bench/teardown_stress.py shows it). FFCV's ``close()`` alone only sets an event that the
    thread reads after a 0.5 s ``put`` timeout on its full queue, so waiting for it cost
    ~0.5 s per epoch cut short. Instead (ffcv 1.0.2's ``EpochIterator``): its batch list is
    emptied, so it decodes at most the batch in hand, and its queue drained until it ends;
    then ``close()`` releases its memory, once no thread uses it."""
    batches.iter_ixes = iter(())
    deadline = time.monotonic() + PREFETCH_STOP_TIMEOUT_S
    while batches.is_alive() and time.monotonic() < deadline:
        try:
            batches.output_queue.get(timeout=0.01)
        except queue.Empty:
            pass
    batches.close()
    batches.join(timeout=max(0.0, deadline - time.monotonic()))


class MemberLoader:
    """``Batch``es (uint8 NCHW images, int64 labels, sample indices) for one member's replica.

    Train loaders augment with ``policy`` at ``strength`` (see ``cohort.data.augment``);
    evaluation loaders do not augment.

    Images stay in [0, 255] uint8 until the model's first layer: normalisation belongs
    to the model, so that input-space perturbations have a well-defined pixel scale.
    FFCV reuses its output buffers, so a caller that keeps a batch must clone it.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        member: int,
        replica: int,
        replicas: int,
        seed: int,
        policy: str,
        batch_size: int,
        num_workers: int,
        device: torch.device,
        train: bool,
        strength: float = 1.0,
        view_stream: int | None = None,
        labelled: np.ndarray | None = None,
        labelled_only: bool = False,
        partners: bool = False,
        random_resized_crop: bool = False,
        resolution: ResolutionConfig | None = None,
        page_window: int = 0,
        os_cache: bool = True,
        own_order: int | None = None,
    ):
        """``view_stream``: the member whose augmentation draws this one uses
        (``CohortConfig.view_stream``; default: its own). ``labelled``: the training samples
        whose labels may be read (``cohort.data.labelled``; None: all), the others' labels
        hidden; ``labelled_only``: read those samples alone. ``partners``: each batch is
        ``batch_size`` anchors followed by their same-class partners (CS-KD).
        ``random_resized_crop`` (train): decode each image as a seeded random-resized crop at
        ``resolution``'s size for the epoch; eval loaders decode at its ``eval_res``.
        ``page_window`` > 0 (train): the page-local order over that many pages at a time.
        ``os_cache``: FFCV's own (read through the OS page cache, or page by page itself).
        ``own_order`` (train): the stream of this member's own sample order (``cohort.data.order.order_stream``)."""
        self.root, self.split, self.train = Path(root), split, train
        self.meta = read_meta(self.root)
        self.path = self.root / f"{split}.beton"
        self.clock = AugmentationClock(seed, member if view_stream is None else view_stream)
        size = self.meta["image_size"]
        self.resolution = resolution or ResolutionConfig()
        self.crop = None  # the random-resized-crop decoder, whose size follows the epoch
        if train and random_resized_crop:
            first = self.resolution.at(0, size)
            decoder = self.crop = SeededRandomResizedCrop(self.clock, (first, first))
        elif self.meta.get("decoder") == "center_crop":
            side = (self.resolution.eval_res or size) if not train else size
            decoder = CenterCropRGBImageDecoder((side, side), ratio=224 / 256)
        else:
            decoder = SimpleRGBImageDecoder()
        ops = build_policy(policy, self.clock, size, strength) if train else []
        to_device = [ToDevice(device, non_blocking=True)] if device.type == "cuda" else []
        self.partners = partners
        self.order = CohortOrder(
            seed,
            replica,
            replicas,
            shuffle=train,
            partners_of=train_labels(self.root) if partners else None,
            anchors_per_batch=batch_size,
            pages=sample_pages(self.path) if train and page_window else None,
            window=page_window,
            stream=own_order,
        )
        self.loader = Loader(
            str(self.path),
            batch_size=2 * batch_size if partners else batch_size,
            num_workers=num_workers,
            os_cache=os_cache,
            indices=np.asarray(labelled) if labelled is not None and labelled_only else None,
            order=self.order,
            drop_last=train,
            pipelines={
                "image": [decoder, *ops, ToTensor(), *to_device, ToTorchImage()],
                "label": [IntDecoder(), ToTensor(), *to_device, Squeeze(1)],
            },
        )
        self.num_samples = self.loader.reader.num_samples
        self.hidden = None  # per sample of the file: is its label hidden?
        if labelled is not None:
            hidden = torch.ones(self.num_samples, dtype=torch.bool)
            hidden[torch.from_numpy(np.asarray(labelled, dtype=np.int64))] = False
            self.hidden = hidden.to(device)

    @classmethod
    def for_training(
        cls, config: CohortConfig, member: int, replica: int, device: torch.device, labelled: np.ndarray | None = None
    ) -> MemberLoader:
        """Member ``member``'s replica ``replica`` on the training split, as the config says: its
        policy and strength, its view stream, the labelled set (``labelled``), CS-KD's partners,
        ImageNet's crops and resolutions, the page-local order."""
        data, own = config.data, config.members[member]
        return cls(
            data.root,
            "train",
            member=member,
            replica=replica,
            replicas=config.replicas,
            seed=config.seed,
            policy=own.policy,
            strength=own.strength,
            batch_size=data.batch_size,
            train=True,
            num_workers=data.num_workers,
            device=device,
            os_cache=data.os_cache,
            view_stream=config.view_stream(member),
            labelled=labelled,
            labelled_only=not config.trains_on_unlabelled,
            partners=config.pairs_partners,
            random_resized_crop=data.random_resized_crop,
            resolution=data.resolution,
            page_window=data.page_window if data.order == "page_local" else 0,
            own_order=order_stream(data.sample_order, member),
        )

    @classmethod
    def for_evaluation(
        cls, config: CohortConfig, beton: Path, member: int, replica: int, replicas: int, device: torch.device
    ) -> MemberLoader:
        """Replica ``replica`` of ``replicas`` reading ``beton`` in file order, unaugmented, for
        member ``member`` (training's evaluation, ``cohort eval``). The batch is at most the
        replica's shard: an evaluation batch is one pass of the network over the samples it
        holds, whatever its size, but FFCV allocates its buffers for the batch size asked (a
        ``data.eval_batch_size`` far past the split would allocate for samples that do not exist)."""
        data = config.data
        shard = -(-beton_samples(beton) // replicas)
        return cls(
            beton.parent,
            beton.stem,
            member=member,
            replica=replica,
            replicas=replicas,
            seed=config.seed,
            policy="none",
            batch_size=max(1, min(data.eval_batch_size, shard)),
            train=False,
            num_workers=data.num_workers,
            device=device,
            os_cache=data.os_cache,
            resolution=data.resolution,
        )

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.loader)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` from batch ``start_batch`` on (the order and the
        augmentations are pure functions of the epoch, so any epoch can be read at any time)."""
        self.clock.set_epoch(epoch)
        self.loader.next_epoch = epoch
        self.order.start = start_batch * self.loader.batch_size
        if self.crop is not None:
            side = self.resolution.at(epoch, self.meta["image_size"])
            if self.crop.output_size != (side, side):  # progressive resizing: FFCV compiles the pipeline anew
                self.crop.output_size = (side, side)
                self.loader.recompile = True
        try:
            batches = iter(self.loader)
        finally:
            self.order.start = 0  # FFCV read the order inside iter(); later epochs start at 0
            self.loader.recompile = False
        # FFCV batches the order's samples in sequence, so batch b holds order[b·B:(b+1)·B].
        order = torch.from_numpy(self.order.shard(np.asarray(self.loader.indices), epoch).astype(np.int64))
        size = self.loader.batch_size
        # FFCV sizes an epoch from the whole shard, so one started mid-way ends with a partial
        # batch that a full epoch drops (drop_last): a training epoch stops at len(self).
        last = len(self) if self.train else None
        try:
            for b, (images, labels) in enumerate(batches, start=start_batch):
                if b == last:
                    break
                indices = order[b * size : b * size + len(labels)]
                if self.hidden is not None:
                    labels = torch.where(self.hidden[indices.to(self.hidden.device)], IGNORE_LABEL, labels)
                yield Batch(images, labels, indices, anchors=len(labels) // 2 if self.partners else len(labels))
        finally:
            stop_prefetch(batches)

    def indices(self, epoch: int) -> np.ndarray:
        """The sample indices this replica reads in ``epoch``, batch after batch."""
        order = self.order.shard(np.asarray(self.loader.indices), epoch)
        return order[: len(self) * self.loader.batch_size] if self.train else order

    def unshard(self, per_replica: np.ndarray) -> np.ndarray:
        """Evaluation outputs gathered over replicas ``[R, L, ...]`` → file order ``[N, ...]``."""
        return unshard(per_replica, self.num_samples)
