import numpy as np
import pytest

from cohort.data.order import CohortOrder, order_stream, partner_table, unshard

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
    paired = [
        CohortOrder(5, r, replicas, partners_of=LABELS, anchors_per_batch=per_batch).shard(indices, 4)
        for r in range(replicas)
    ]
    partners = partner_table(LABELS, 5, 4)
    for mine, order in zip(anchors, paired):
        batches = order.reshape(-1, 2 * per_batch).astype(np.int64)
        assert len(batches) == len(mine) // per_batch
        np.testing.assert_array_equal(batches[:, :per_batch].ravel(), mine[: len(batches) * per_batch])
        np.testing.assert_array_equal(batches[:, per_batch:], partners[batches[:, :per_batch]])
    if replicas == 2:
        first, second = (order.reshape(-1, 2 * per_batch)[:, :per_batch] for order in paired)
        assert not set(first.ravel()) & set(second.ravel())


def test_the_page_local_order_reads_few_pages_at_a_time_and_keeps_the_cohorts_guarantees():
    from cohort.data.order import page_local_order

    pages = np.repeat(np.arange(100), 50)  # 5 000 samples, 50 to a page
    indices = np.arange(5000)
    order = page_local_order(indices, pages, seed=3, epoch=2, window=4)
    assert sorted(order.tolist()) == indices.tolist()  # every sample once
    assert np.array_equal(order, page_local_order(indices, pages, seed=3, epoch=2, window=4))  # a pure function
    assert not np.array_equal(order, page_local_order(indices, pages, seed=3, epoch=3, window=4))
    # Every run of 200 samples (4 pages' worth) spans at most 8 pages; a full shuffle's spans nearly all 100.
    spans = [len(np.unique(pages[order[i : i + 200]])) for i in range(0, 5000, 200)]
    shuffled = np.random.default_rng(0).permutation(5000)
    assert max(spans) <= 8 and min(len(np.unique(pages[shuffled[i : i + 200]])) for i in range(0, 5000, 200)) > 80
    # Pages are visited in a random order, and samples within a window are mixed.
    first_pages = [int(pages[order[i]]) for i in range(0, 5000, 200)]
    assert first_pages != sorted(first_pages)
    assert not np.array_equal(np.sort(order[:200]), order[:200])


def test_page_local_shards_give_replicas_whole_disjoint_batches_and_members_the_same():
    pages = np.repeat(np.arange(40), 25)
    shards = [CohortOrder(seed=1, replica=r, replicas=2, anchors_per_batch=16, pages=pages, window=2) for r in range(2)]
    for order in shards:
        order.indices = np.arange(1000)
    a, b = (order.shard(np.arange(1000), epoch=0) for order in shards)
    assert len(a) == len(b) == 1000 // 32 * 16 and not set(a) & set(b)
    again = CohortOrder(seed=1, replica=0, replicas=2, anchors_per_batch=16, pages=pages, window=2)
    assert np.array_equal(again.shard(np.arange(1000), epoch=0), a)  # another member: the same samples
    batches = a.reshape(-1, 16)
    assert (
        max(len(np.unique(pages[batch])) for batch in batches) <= 4
    )  # within two windows of 2 pages (it may straddle one edge)


def test_sample_pages_reads_each_images_page_from_the_file(digits_root):
    from cohort.data.beton import read_tables
    from cohort.data.order import sample_pages

    pages = sample_pages(digits_root / "train.beton")
    tables = read_tables(digits_root / "train.beton")
    assert len(pages) == tables.num_samples and pages.min() >= 1  # page 0 holds the header
    assert np.all(np.diff(pages) >= 0)  # the writer fills pages in sample order


@pytest.mark.parametrize("replicas", [1, 2])
def test_per_member_orders_are_permutations_of_their_own_shared_by_a_members_replicas(replicas):
    """``data.sample_order: per_member``: member m's replicas cut one permutation of m's own into
    disjoint shards; members' permutations differ; the shared order is what it always was."""
    indices = np.arange(N, dtype=np.uint64)

    def member_order(member, epoch=2):
        stream = order_stream("per_member", member)
        parts = [CohortOrder(7, r, replicas, stream=stream).shard(indices, epoch) for r in range(replicas)]
        union = np.concatenate(parts)
        assert len(np.unique(union)) == len(union) == N - N % replicas  # disjoint shards of one permutation
        return np.stack(parts, axis=1).reshape(-1)  # the member's permutation, in step order

    orders = [member_order(m) for m in range(3)]
    assert all(not np.array_equal(orders[a], orders[b]) for a in range(3) for b in range(a + 1, 3))
    assert np.array_equal(member_order(1), orders[1])  # a pure function of (seed, member, epoch)
    assert order_stream("shared", 1) is None
    shared = np.stack(shards(2, replicas), axis=1).reshape(-1)
    assert not any(np.array_equal(shared, order) for order in orders)
    pages = np.arange(N) // 10
    own = [CohortOrder(7, 0, 1, pages=pages, window=2, anchors_per_batch=4, stream=m).shard(indices, 0) for m in (0, 1)]
    assert len(set(own[0])) == len(own[0]) == len(own[1]) == N - N % 4  # page-local orders too, whole batches
    assert not np.array_equal(own[0], own[1])
