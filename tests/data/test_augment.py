import numpy as np
import pytest
import torch

from cohort.data.augment import (POLICIES, AugmentationClock, ColorJitter, Cutout, RandomFlip, RandomTranslate,
                                 build_policy, uniform)
from cohort.data.loader import MemberLoader


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
        expected = padded[3 + dy: 3 + dy + 8, 3 + dx: 3 + dx + 10]
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
        expected[max(cy - 2, 0): cy + 2, max(cx - 2, 0): cx + 2] = 0
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


def load_epoch(root, *, member, policy, workers, epoch=0, batches=3):
    loader = MemberLoader(root, "train", member=member, replica=0, replicas=1, seed=3, policy=policy, batch_size=32,
                          num_workers=workers, device=torch.device("cpu"), train=True)
    out = []
    for i, (images, labels) in enumerate(loader.epoch(epoch)):
        if i == batches:
            break
        out.append((images.clone(), labels.clone()))
    return loader, out


def test_loader_is_bit_identical_across_worker_counts_and_members_differ(digits_root):
    _, one = load_epoch(digits_root, member=0, policy="color", workers=1)
    _, two = load_epoch(digits_root, member=0, policy="color", workers=2)
    _, other = load_epoch(digits_root, member=1, policy="standard_cutout", workers=2)
    for (x1, y1), (x2, y2), (x3, y3) in zip(one, two, other):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(y1, y3)  # same samples, same labels ...
        assert not torch.equal(x1, x3)  # ... different views


def test_loader_reads_the_orders_indices_in_batches(digits_root):
    loader, batches = load_epoch(digits_root, member=0, policy="none", workers=1, epoch=2)
    in_file_order = MemberLoader(digits_root, "train", member=0, replica=0, replicas=1, seed=3, policy="none",
                                 batch_size=2000, num_workers=1, device=torch.device("cpu"), train=False)
    all_labels = torch.cat([y.clone() for _, y in in_file_order.epoch(0)]).numpy()
    got = torch.cat([y for _, y in batches]).numpy()
    np.testing.assert_array_equal(got, all_labels[loader.indices(2)[: len(got)].astype(np.int64)])
