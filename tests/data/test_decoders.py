"""The seeded random-resized-crop decoder (``cohort.data.decoders``): its box against a plain
Python reference of the same hash, its statistics against torchvision's, and what FFCV's
compiled pipeline decodes against a numpy crop-and-resize of the same box."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cohort.config.data import progressive_resolution
from cohort.data.decoders import CROP_SALT, random_resized_box
from cohort.data.randomness import AugmentationClock

MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def uniform(key: int, draw: int) -> float:
    bits = splitmix64(key ^ splitmix64((draw + 0x632BE59BD9B4E019) & MASK))
    return (bits >> 11) * (1.0 / 9007199254740992.0)


def reference_box(height, width, key, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, its random numbers from the stream ``key``."""
    area = height * width
    for attempt in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * uniform(key, 4 * attempt))
        aspect = math.exp(
            math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * uniform(key, 4 * attempt + 1)
        )
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return (
                int(uniform(key, 4 * attempt + 2) * (height - h + 1)),
                int(uniform(key, 4 * attempt + 3) * (width - w + 1)),
                h,
                w,
            )
    if width / height < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif width / height > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def test_the_box_is_the_reference_box_of_its_stream():
    clock = AugmentationClock(seed=3, member=1)
    for epoch in (0, 7):
        clock.set_epoch(epoch)
        for index, (height, width) in enumerate([(375, 500), (500, 333), (64, 64), (40, 300), (300, 41)] * 40):
            key = int(clock.key(index, CROP_SALT))
            assert random_resized_box(height, width, np.uint64(key), 0.08, 1.0, 3 / 4, 4 / 3) == reference_box(
                height, width, key
            )


def test_an_image_too_thin_for_any_draw_falls_back_to_the_clamped_centre_crop():
    # A 1-pixel-high strip: no box of ratio ≤ 4/3 and area ≥ 8 % fits, so all ten draws fail.
    assert random_resized_box(1, 400, np.uint64(5), 0.08, 1.0, 3 / 4, 4 / 3) == (0, 199, 1, 1)
    assert random_resized_box(400, 2, np.uint64(5), 0.08, 1.0, 3 / 4, 4 / 3) == (198, 0, 3, 2)


def test_scale_and_aspect_ratio_follow_torchvision_random_resized_crop():
    import torch
    from scipy.stats import ks_2samp
    from torchvision.transforms import RandomResizedCrop

    height, width, n = 375, 500, 4000
    clock = AugmentationClock(seed=0, member=0)
    ours = [random_resized_box(height, width, clock.key(i, CROP_SALT), 0.08, 1.0, 3 / 4, 4 / 3) for i in range(n)]
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    theirs = [RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    for statistic in (
        lambda b: b[2] * b[3] / (height * width),
        lambda b: math.log(b[3] / b[2]),
        lambda b: (b[0] + b[2] / 2) / height,
        lambda b: (b[1] + b[3] / 2) / width,
    ):
        a, b = [statistic(box) for box in ours], [statistic(box) for box in theirs]
        assert ks_2samp(a, b).pvalue > 0.01
        assert np.mean(a) == pytest.approx(np.mean(b), abs=0.02)


@pytest.mark.parametrize("epoch, expected", [(0, 160), (11, 160), (12, 192), (13, 192), (15, 192)])
def test_progressive_resolution_ramps_linearly_in_multiples_of_32(epoch, expected):
    # ffcv-imagenet's rn18 16-epoch setting: 160 px → 192 px between epochs 11 and 13
    # (at epoch 12 the ramp is at 176 = 5.5 × 32, which rounds to 6 × 32).
    assert progressive_resolution(epoch, 160, 192, 11, 13) == expected
    assert progressive_resolution(epoch, 160, 256, 0, 16) == int(round((160 + 6 * epoch) / 32)) * 32


class VariableImages:
    """Images of different sizes (HWC uint8) with labels, for FFCV's writer."""

    def __init__(self, count: int, seed: int):
        rng = np.random.default_rng(seed)
        self.items = [
            (rng.integers(0, 256, (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3), dtype=np.uint8), i % 3)
            for i in range(count)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def variable_root(tmp_path_factory):
    """A data folder of raw images of many sizes (as `cohort data imagefolder` writes JPEGs)."""
    from cohort.data.datasets import _write_splits

    root = tmp_path_factory.mktemp("variable")
    splits = {"train": VariableImages(24, 0), "val": VariableImages(6, 1), "test": VariableImages(6, 2)}
    meta = {
        "dataset": "variable",
        "num_classes": 3,
        "classes": ["a", "b", "c"],
        "image_size": 24,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "decoder": "center_crop",
    }
    _write_splits(root, splits, meta, write_mode="raw", max_resolution=None)
    return root, splits["train"]


def test_the_compiled_decoder_cuts_the_seeded_box_at_the_epochs_resolution(variable_root):
    import torch
    from ffcv.libffcv import resize_crop

    from cohort.config import ResolutionConfig
    from cohort.data.loader import MemberLoader

    root, images = variable_root
    resolution = ResolutionConfig(min_res=32, max_res=64, start_ramp=1, end_ramp=2)
    loader = MemberLoader(
        root,
        "train",
        member=0,
        replica=0,
        replicas=1,
        seed=4,
        policy="none",
        batch_size=8,
        num_workers=2,
        device=torch.device("cpu"),
        train=True,
        random_resized_crop=True,
        resolution=resolution,
    )
    for epoch, side in ((0, 32), (2, 64), (1, 32)):  # 64 px after the ramp; back to 32 on a resume
        seen = 0
        for batch in loader.epoch(epoch):
            assert batch.images.shape[2:] == (side, side)
            for row, index in enumerate(batch.indices.tolist()):
                image = images[index][0]
                top, left, h, w = loader.crop.box(*image.shape[:2], index)
                expected = np.empty((side, side, 3), dtype=np.uint8)
                resize_crop(image, top, top + h, left, left + w, expected)
                np.testing.assert_array_equal(batch.images[row].permute(1, 2, 0).numpy(), expected)
                seen += 1
        assert seen == 24
