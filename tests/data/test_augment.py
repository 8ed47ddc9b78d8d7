import math

import numpy as np
import pytest
import torch

from cohort.config.names import ALL_POLICIES, POLICY_ORDER, STRENGTH_RANGE, auto_policies
from cohort.data.augment import (
    RANDAUGMENT_OPS,
    ColorJitter,
    Cutout,
    Grayscale,
    Posterize,
    RandAugment,
    RandomFlip,
    RandomTranslate,
    Rotate,
    Solarize,
)
from cohort.data.loader import MemberLoader
from cohort.data.policies import POLICIES, build_policy
from cohort.data.randomness import AugmentationClock, uniform


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, size=(8, 10, 3), dtype=np.uint8)


def test_uniform_is_in_unit_interval_and_looks_uniform():
    draws = np.array([uniform(np.uint64(12345), i) for i in range(20000)])
    assert draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean() - 0.5) < 0.01 and abs(draws.var() - 1 / 12) < 0.005


def test_translate_matches_a_numpy_reference(image):
    op = RandomTranslate(AugmentationClock(0, 0), salt=1, pad=3)
    for index in range(20):
        key = op.clock.key(index, 1)
        dy, dx = int(uniform(key, 0) * 7) - 3, int(uniform(key, 1) * 7) - 3
        padded = np.pad(image, ((3, 3), (3, 3), (0, 0)))
        expected = padded[3 + dy : 3 + dy + 8, 3 + dx : 3 + dx + 10]
        np.testing.assert_array_equal(op.apply_one(image, index), expected)


def test_flip_matches_a_numpy_reference_and_flips_about_half(image):
    op = RandomFlip(AugmentationClock(0, 0), salt=2)
    flips = 0
    for index in range(200):
        out = op.apply_one(image, index)
        flipped = uniform(op.clock.key(index, 2), 0) < 0.5
        np.testing.assert_array_equal(out, image[:, ::-1] if flipped else image)
        flips += flipped
    assert 70 < flips < 130


def test_cutout_blacks_out_a_clipped_square(image):
    op = Cutout(AugmentationClock(0, 0), salt=3, size=4)
    for index in range(20):
        key = op.clock.key(index, 3)
        cy, cx = int(uniform(key, 0) * 8), int(uniform(key, 1) * 10)
        expected = image.copy()
        expected[max(cy - 2, 0) : cy + 2, max(cx - 2, 0) : cx + 2] = 0
        np.testing.assert_array_equal(op.apply_one(image, index), expected)


def test_color_jitter_matches_a_numpy_reference(image):
    op = ColorJitter(AugmentationClock(0, 0), salt=4, brightness=0.4, contrast=0.4, saturation=0.4)
    weights = np.array([0.299, 0.587, 0.114])
    for index in range(5):
        key = op.clock.key(index, 4)
        b, c, s = (1 + 0.4 * (2 * uniform(key, i) - 1) for i in range(3))
        x = image.astype(np.float64) * b
        mean_grey = (x @ weights).mean()
        x = mean_grey + c * (x - mean_grey)
        grey = (x @ weights)[..., None]
        x = grey + s * (x - grey)
        expected = np.clip(np.round(x), 0, 255).astype(np.uint8)
        assert np.abs(op.apply_one(image, index).astype(int) - expected).max() <= 1


def test_decisions_depend_on_member_epoch_and_index_only(image):
    clock_a, clock_b = AugmentationClock(0, 0), AugmentationClock(0, 0)
    op_a, op_b = RandomTranslate(clock_a, 1, pad=3), RandomTranslate(clock_b, 1, pad=3)
    np.testing.assert_array_equal(op_a.apply_one(image, 5), op_b.apply_one(image, 5))
    outputs = {op_a.apply_one(image, 5).tobytes() for _ in range(3)}
    assert len(outputs) == 1
    other_member = RandomTranslate(AugmentationClock(0, 1), 1, pad=3)
    keys = {RandomTranslate(AugmentationClock(0, m), 1, pad=3).clock.key(5, 1) for m in range(4)}
    assert len(keys) == 4
    clock_a.set_epoch(1)
    assert clock_a.key(5, 1) != clock_b.key(5, 1)
    assert other_member.clock.key(5, 1) != clock_b.key(5, 1)


def test_unknown_policy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown augmentation policy 'wild'; valid: none, crop, standard"):
        build_policy("wild", AugmentationClock(0, 0), 32)
    assert {"none", "standard", "standard_cutout", "color"} <= set(POLICIES)


def load_epoch(root, *, member, policy, workers, epoch=0, batches=3, strength=1.0):
    loader = MemberLoader(
        root,
        "train",
        member=member,
        replica=0,
        replicas=1,
        seed=3,
        policy=policy,
        batch_size=32,
        num_workers=workers,
        device=torch.device("cpu"),
        train=True,
        strength=strength,
    )
    out = []
    for i, batch in enumerate(loader.epoch(epoch)):
        if i == batches:
            break
        out.append((batch.images.clone(), batch.labels.clone()))
    return loader, out


@pytest.mark.parametrize("policy, other_policy", [("color", "standard_cutout"), ("randaugment", "gray")])
def test_loader_is_bit_identical_across_worker_counts_and_members_differ(digits_root, policy, other_policy):
    _, one = load_epoch(digits_root, member=0, policy=policy, workers=1)
    _, two = load_epoch(digits_root, member=0, policy=policy, workers=2)
    _, other = load_epoch(digits_root, member=1, policy=other_policy, workers=2)
    for (x1, y1), (x2, y2), (x3, y3) in zip(one, two, other):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(y1, y3)  # same samples, same labels ...
        assert not torch.equal(x1, x3)  # ... different views


def test_loader_reads_the_orders_indices_in_batches(digits_root):
    loader, batches = load_epoch(digits_root, member=0, policy="none", workers=1, epoch=2)
    in_file_order = MemberLoader(
        digits_root,
        "train",
        member=0,
        replica=0,
        replicas=1,
        seed=3,
        policy="none",
        batch_size=2000,
        num_workers=1,
        device=torch.device("cpu"),
        train=False,
    )
    all_labels = torch.cat([batch.labels.clone() for batch in in_file_order.epoch(0)]).numpy()
    got = torch.cat([y for _, y in batches]).numpy()
    np.testing.assert_array_equal(got, all_labels[loader.indices(2)[: len(got)].astype(np.int64)])


# --- numpy references for the new operations --------------------------------------------


def luma(image):
    x = image.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def desaturate(image, amount):
    return np.round((1.0 - amount) * image.astype(np.float64) + amount * luma(image)[..., None]).astype(np.uint8)


def solarize(image, threshold):
    return np.where(image >= threshold, 255 - image, image)


def posterize(image, bits):
    return image & np.uint8((0xFF << (8 - bits)) & 0xFF)


def rotate(image, degrees):
    """Nearest-neighbour rotation about the centre, clockwise as displayed for degrees > 0."""
    height, width = image.shape[:2]
    theta = degrees * np.pi / 180.0
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sx = cos_t * (xs - cx) + sin_t * (ys - cy) + cx
    sy = cos_t * (ys - cy) - sin_t * (xs - cx) + cy
    iy, ix = np.floor(sy + 0.5).astype(int), np.floor(sx + 0.5).astype(int)
    inside = (0 <= iy) & (iy < height) & (0 <= ix) & (ix < width)
    out = np.zeros_like(image)
    out[inside] = image[iy[inside], ix[inside]]
    return out


def contrast(image, factor):
    sums = image.reshape(-1, 3).sum(axis=0, dtype=np.int64)
    mean_grey = (0.299 * sums[0] + 0.587 * sums[1] + 0.114 * sums[2]) / (image.shape[0] * image.shape[1])
    return np.clip(np.round(mean_grey + factor * (image.astype(np.float64) - mean_grey)), 0, 255).astype(np.uint8)


def brightness(image, factor):
    return np.clip(np.round(factor * image.astype(np.float64)), 0, 255).astype(np.uint8)


def erase(image, cy, cx, size):
    out = image.copy()
    y0, x0 = cy - size // 2, cx - size // 2
    out[max(y0, 0) : y0 + size, max(x0, 0) : x0 + size] = 0
    return out


def shift(image, dy, dx):
    """out[y, x] = image[y + dy, x + dx], black outside."""
    height, width = image.shape[:2]
    ys, xs = np.arange(height) + dy, np.arange(width) + dx
    rows, cols = (ys >= 0) & (ys < height), (xs >= 0) & (xs < width)
    out = np.zeros_like(image)
    out[np.ix_(rows, cols)] = image[np.ix_(ys[rows], xs[cols])]
    return out


def randaugment(image, key, n, magnitude):
    """RandAugment as documented: step s draws its kind from 3s and its own numbers from 3s + 1, 3s + 2."""
    level, (height, width) = magnitude / 10.0, image.shape[:2]
    kinds = []
    for step in range(n):
        kind = RANDAUGMENT_OPS[int(uniform(key, 3 * step) * len(RANDAUGMENT_OPS))]
        u1, u2 = uniform(key, 3 * step + 1), uniform(key, 3 * step + 2)
        sign = 1.0 if u1 < 0.5 else -1.0
        if kind == "rotate":
            image = rotate(image, sign * 30.0 * level)
        elif kind == "solarize":
            image = solarize(image, 256.0 * (1.0 - level))
        elif kind == "posterize":
            image = posterize(image, 8 - int(4.0 * level + 0.5))
        elif kind == "grayscale":
            image = desaturate(image, level)
        elif kind == "contrast":
            image = contrast(image, 1.0 + sign * 0.9 * level)
        elif kind == "brightness":
            image = brightness(image, 1.0 + sign * 0.9 * level)
        elif kind == "cutout":
            image = erase(image, int(u1 * height), int(u2 * width), int(level * min(height, width) / 2.0 + 0.5))
        elif kind == "translate":
            horizontal = u2 < 0.5
            pixels = int(sign * int(0.3 * level * (width if horizontal else height) + 0.5))
            image = shift(image, 0, pixels) if horizontal else shift(image, pixels, 0)
        kinds.append(kind)
    return image, kinds


@pytest.fixture
def big_image():
    return np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def test_grayscale_replaces_rgb_by_rounded_luma_in_all_channels(image):
    op = Grayscale(AugmentationClock(0, 0), salt=5, p=0.5)
    grey = np.repeat(np.round(luma(image)).astype(np.uint8)[..., None], 3, axis=2)
    applied = 0
    for index in range(40):
        chosen = uniform(op.clock.key(index, 5), 0) < 0.5
        np.testing.assert_array_equal(op.apply_one(image, index), grey if chosen else image)
        applied += chosen
    assert 0 < applied < 40


def test_solarize_inverts_values_at_or_above_the_threshold(image):
    op = Solarize(AugmentationClock(0, 0), salt=6, p=0.5, threshold=128)
    applied = 0
    for index in range(40):
        chosen = uniform(op.clock.key(index, 6), 0) < 0.5
        np.testing.assert_array_equal(op.apply_one(image, index), solarize(image, 128) if chosen else image)
        applied += chosen
    assert 0 < applied < 40
    edge = np.array([[[127, 128, 255]]], dtype=np.uint8)
    always = Solarize(AugmentationClock(0, 0), salt=6, p=1.0, threshold=128)
    np.testing.assert_array_equal(always.apply_one(edge, 0), [[[127, 127, 0]]])


def test_posterize_keeps_the_top_bits(image):
    op = Posterize(AugmentationClock(0, 0), salt=7, p=0.5, bits=3)
    applied = 0
    for index in range(40):
        chosen = uniform(op.clock.key(index, 7), 0) < 0.5
        np.testing.assert_array_equal(op.apply_one(image, index), image & 0b11100000 if chosen else image)
        applied += chosen
    assert 0 < applied < 40
    with pytest.raises(ValueError, match="bits must be in"):
        Posterize(AugmentationClock(0, 0), salt=7, p=0.5, bits=9)


def test_rotate_matches_a_numpy_reference(image, big_image):
    square = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    np.testing.assert_array_equal(rotate(square, 90.0), np.rot90(square, k=-1))  # the reference itself
    op = Rotate(AugmentationClock(0, 0), salt=8, max_degrees=40.0)
    for picture in (image, big_image, square):
        for index in range(20):
            degrees = 40.0 * (2.0 * uniform(op.clock.key(index, 8), 0) - 1.0)
            np.testing.assert_array_equal(op.apply_one(picture, index), rotate(picture, degrees))


def test_randaugment_matches_a_numpy_reference_and_uses_every_kind(image, big_image):
    op = RandAugment(AugmentationClock(0, 0), salt=9, n=2, magnitude=9.0)
    seen = set()
    for picture in (image, big_image):
        for index in range(60):
            expected, kinds = randaugment(picture, op.clock.key(index, 9), n=2, magnitude=9.0)
            np.testing.assert_array_equal(op.apply_one(picture, index), expected, err_msg=f"{index}: {kinds}")
            seen.update(kinds)
    assert seen == set(RANDAUGMENT_OPS)
    for n, magnitude in ((-1, 5.0), (2, 10.5)):
        with pytest.raises(ValueError, match="RandAugment needs"):
            RandAugment(AugmentationClock(0, 0), salt=9, n=n, magnitude=magnitude)


def test_randaugment_at_magnitude_zero_is_the_identity(big_image):
    op = RandAugment(AugmentationClock(0, 0), salt=9, n=4, magnitude=0.0)
    for index in range(30):
        np.testing.assert_array_equal(op.apply_one(big_image, index), big_image)


def apply_policy(ops, image, index):
    for op in ops:
        image = op.apply_one(image, index)
    return image


@pytest.mark.parametrize("name", ALL_POLICIES)
def test_strength_zero_is_no_augmentation(name, big_image):
    ops = build_policy(name, AugmentationClock(0, 0), 32, strength=0.0)
    for index in range(10):
        np.testing.assert_array_equal(apply_policy(ops, big_image, index), big_image)


def test_strength_one_keeps_the_original_policies():
    def described(name):
        ops = build_policy(name, AugmentationClock(0, 0), 32)
        return [(type(op).__name__, op.salt, op.params.tolist()) for op in ops]

    crop, flip = ("RandomTranslate", 1, [4.0]), ("RandomFlip", 2, [0.5])
    assert described("none") == []
    assert described("crop") == [crop]
    assert described("flip") == [flip]
    assert described("standard") == [crop, flip]
    assert described("standard_cutout") == [crop, flip, ("Cutout", 3, [8.0])]
    assert described("color") == [("ColorJitter", 4, [0.4, 0.4, 0.4]), crop, flip]
    assert described("randaugment")[-1] == ("RandAugment", 9, [2.0, 9.0])


@pytest.mark.parametrize("strength", [-0.1, 2.01, float("nan")])
def test_strength_outside_the_range_is_refused(strength):
    with pytest.raises(ValueError, match=r"augmentation strength must be in \[0\.0, 2\.0\], got"):
        build_policy("standard", AugmentationClock(0, 0), 32, strength=strength)
    assert STRENGTH_RANGE == (0.0, 2.0)
    for name in POLICY_ORDER:
        build_policy(name, AugmentationClock(0, 0), 32, strength=2.0)  # the ends of the range are valid


def test_policy_order_lists_every_policy_once():
    assert sorted(ALL_POLICIES) == sorted(POLICIES) and len(POLICY_ORDER) >= 8
    assert POLICY_ORDER[0] == "none"


def test_auto_policies_are_distinct_and_spread_from_mildest_to_strongest():
    for members in range(2, len(POLICY_ORDER) + 1):
        chosen = auto_policies(members)
        positions = [POLICY_ORDER.index(name) for name in chosen]
        assert len(chosen) == members and positions == sorted(set(positions))
        assert chosen[0] == POLICY_ORDER[0] and chosen[-1] == POLICY_ORDER[-1]
        gaps = np.diff(positions)
        assert gaps.max() - gaps.min() <= 1  # evenly spread
    assert auto_policies(len(POLICY_ORDER)) == list(POLICY_ORDER)
    assert len(auto_policies(1)) == 1


def test_auto_policies_refuses_more_members_than_policies():
    too_many = len(POLICY_ORDER) + 1
    message = (
        f"policies: auto has {too_many} members but only {len(POLICY_ORDER)} policies exist; name each member's policy"
    )
    with pytest.raises(ValueError, match=f"^{message}$"):
        auto_policies(too_many)


def test_loader_passes_its_strength_to_the_policy(digits_root):
    with pytest.raises(ValueError, match="augmentation strength must be in"):
        load_epoch(digits_root, member=0, policy="randaugment", workers=1, strength=2.5)
