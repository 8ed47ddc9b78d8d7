import numpy as np
import pytest

from cohort.data.order import CohortOrder, unshard

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
