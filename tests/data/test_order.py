import numpy as np
import pytest

from cohort.data.order import CohortOrder, partner_table, unshard

N = 103


def shards(epoch, replicas, shuffle=True, seed=7):
    indices = np.arange(N, dtype=np.uint64)
    return [CohortOrder(seed, r, replicas, shuffle).shard(indices, epoch) for r in range(replicas)]


def test_every_member_reads_the_same_indices():
    # The order has no member input: members' loaders built with the cohort seed agree.
    a, b = shards(3, 2), shards(3, 2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_replica_shards_are_disjoint_equal_and_cover_all_but_the_remainder(replicas):
    parts = shards(0, replicas)
    assert len({len(p) for p in parts}) == 1
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union) == N - N % replicas


def test_each_epoch_is_a_new_permutation():
    e0, e1 = shards(0, 1)[0], shards(1, 1)[0]
    assert sorted(e0) == sorted(e1) == list(range(N))
    assert not np.array_equal(e0, e1)


def test_different_seeds_give_different_orders():
    assert not np.array_equal(shards(0, 1, seed=1)[0], shards(0, 1, seed=2)[0])


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_evaluation_shards_unshard_to_file_order(replicas):
    parts = shards(0, replicas, shuffle=False)
    assert len({len(p) for p in parts}) == 1
    stacked = np.stack(parts).astype(np.int64)[..., None]
    np.testing.assert_array_equal(unshard(stacked, N)[:, 0], np.arange(N))


def test_replica_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="replica 2 is outside 0..1"):
        CohortOrder(0, 2, 2)


# --- CS-KD's partners --------------------------------------------------------------------------

LABELS = np.array([i % 7 for i in range(N - 1)] + [7])  # classes 0..6, and class 7 holds one sample


def test_each_partner_is_a_sample_of_its_anchors_class_and_a_singleton_pairs_with_itself():
    partners = partner_table(LABELS, seed=3, epoch=2)
    np.testing.assert_array_equal(LABELS[partners], LABELS)
    assert partners[N - 1] == N - 1
    # Uniform over the class, the anchor itself included: over many epochs every member of
    # class 0 (15 samples) is drawn as sample 0's partner, itself among them.
    drawn = {int(partner_table(LABELS, 3, epoch)[0]) for epoch in range(400)}
    assert drawn == set(np.flatnonzero(LABELS == 0).tolist())


def test_partners_are_a_pure_function_of_seed_epoch_and_anchor():
    np.testing.assert_array_equal(partner_table(LABELS, 3, 2), partner_table(LABELS, 3, 2))
    assert not np.array_equal(partner_table(LABELS, 3, 2), partner_table(LABELS, 3, 3))
    assert not np.array_equal(partner_table(LABELS, 3, 2), partner_table(LABELS, 4, 2))


@pytest.mark.parametrize("replicas", [1, 2])
def test_batches_hold_anchors_then_their_partners_and_replicas_stay_disjoint(replicas):
    indices = np.arange(N, dtype=np.uint64)
    per_batch = 8
    anchors = [CohortOrder(5, r, replicas).shard(indices, 4) for r in range(replicas)]
    paired = [CohortOrder(5, r, replicas, partners_of=LABELS, anchors_per_batch=per_batch).shard(indices, 4)
              for r in range(replicas)]
    partners = partner_table(LABELS, 5, 4)
    for mine, order in zip(anchors, paired):
        batches = order.reshape(-1, 2 * per_batch).astype(np.int64)
        assert len(batches) == len(mine) // per_batch
        np.testing.assert_array_equal(batches[:, :per_batch].ravel(), mine[: len(batches) * per_batch])
        np.testing.assert_array_equal(batches[:, per_batch:], partners[batches[:, :per_batch]])
    if replicas == 2:
        first, second = (order.reshape(-1, 2 * per_batch)[:, :per_batch] for order in paired)
        assert not set(first.ravel()) & set(second.ravel())
