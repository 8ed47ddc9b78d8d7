"""Ranks on GPUs and cores: which GPU each local rank takes, which backend each group uses,
and which cores a pinned rank keeps to."""

import json
import os
import subprocess
import sys

import pytest

from cohort.dist.mesh import detect_launch
from cohort.dist.placement import Placement, PlacementError, place, rank_cores


@pytest.mark.parametrize(
    "members, replicas, per_gpu", [(2, 1, 2), (4, 1, 2), (4, 1, 4), (4, 2, 2), (6, 2, 3), (2, 4, 2)]
)
def test_packed_gpus_hold_n_ranks_each_and_a_members_replicas_never_share_one(members, replicas, per_gpu):
    placement = Placement(per_gpu, replicas)
    ranks = range(members * replicas)
    gpus = [placement.gpu(rank) for rank in ranks]
    assert sorted(set(gpus)) == list(range(members * replicas // per_gpu))  # every GPU used, none skipped
    assert all(gpus.count(g) == per_gpu for g in set(gpus))
    for rank in ranks:
        member, replica = divmod(rank, replicas)
        sharing = [divmod(other, replicas) for other in ranks if gpus[other] == gpus[rank]]
        # the ranks on one GPU are the same replica of distinct members: DDP's NCCL group never repeats a GPU
        assert {r for _, r in sharing} == {replica} and len({m for m, _ in sharing}) == per_gpu


def test_one_rank_per_gpu_is_the_local_rank():
    assert [Placement(1, 3).gpu(rank) for rank in range(6)] == list(range(6))


def test_shared_gpus_exchange_over_gloo_and_keep_nccl_for_the_replicas():
    assert Placement(2, 2).backends("cuda") == {"world": "gloo", "replica": "nccl", "member": "gloo"}
    assert set(Placement(1, 2).backends("cuda").values()) == {"nccl"}
    assert set(Placement(2, 2).backends("cpu").values()) == {"gloo"}


def test_auto_packs_only_when_the_node_lacks_gpus():
    assert place("auto", members=4, replicas=1, local_world_size=4, visible_gpus=8).members_per_gpu == 1
    assert place("auto", members=4, replicas=1, local_world_size=4, visible_gpus=1).members_per_gpu == 4
    assert place("auto", members=4, replicas=1, local_world_size=4, visible_gpus=3).members_per_gpu == 2
    assert place("auto", members=3, replicas=1, local_world_size=3, visible_gpus=2).members_per_gpu == 3
    assert place("auto", members=2, replicas=2, local_world_size=4, visible_gpus=2).members_per_gpu == 2


def test_layouts_that_do_not_fit_are_refused_naming_the_fix():
    with pytest.raises(PlacementError, match="need at least 2 GPUs .* but 1 are visible"):
        place("auto", members=2, replicas=2, local_world_size=4, visible_gpus=1)  # replicas need distinct GPUs
    with pytest.raises(PlacementError, match="members_per_gpu=2 need 2 GPUs but 1 are visible; raise"):
        place(2, members=4, replicas=1, local_world_size=4, visible_gpus=1)
    with pytest.raises(PlacementError, match="whole groups of 2 members × 2 replica"):
        place(2, members=2, replicas=2, local_world_size=2, visible_gpus=8)  # a node holding half a group
    with pytest.raises(PlacementError, match="need 2 GPUs but 0 are visible"):
        place(1, members=2, replicas=1, local_world_size=2, visible_gpus=0)


def test_pinned_ranks_take_disjoint_shares_of_the_cores():
    assert [rank_cores([0, 1, 2, 3], 2, rank) for rank in range(2)] == [[0, 1], [2, 3]]
    assert [rank_cores([0, 1, 2, 3, 4], 2, rank) for rank in range(2)] == [[0, 1], [2, 3]]
    assert [rank_cores([4, 5], 4, rank) for rank in range(4)] == [[4], [5], [4], [5]]  # more ranks than cores


def test_a_pinned_rank_keeps_to_its_share_of_the_cores():
    """train.pin_cores through configure_threads, in a child process (it changes the process's affinity)."""
    code = (
        "import os; from cohort.config import CohortConfig; from cohort.dist.mesh import configure_threads; "
        "c = CohortConfig(); c.train.pin_cores = True; before = sorted(os.sched_getaffinity(0)); "
        "configure_threads(c, 2, 1); print(before, sorted(os.sched_getaffinity(0)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = (json.loads(part) for part in result.stdout.strip().replace("] [", "]|[").split("|"))
    assert after == rank_cores(before, 2, 1)
    assert len(before) == 1 or set(after) < set(before)  # rank 1 of 2 gave up rank 0's share


# torchrun's variables for global rank 6 of a K = 4, R = 2 cohort on two nodes of four ranks (node 1, local rank 2).
SECOND_NODE = {"RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1"}


def test_a_node_holding_part_of_the_cohort_places_its_ranks_by_local_rank():
    """Each node places its own ranks on its own GPUs as node 0 does: the same replica of n
    consecutive members on a GPU, a member's replicas on distinct ones, every GPU of the node used."""
    launch = detect_launch({**SECOND_NODE, "MASTER_ADDR": "node0", "MASTER_PORT": "29500"})
    assert (launch.rank, launch.local_rank, launch.local_world_size) == (6, 2, 4)
    placement = place("auto", members=4, replicas=2, local_world_size=4, visible_gpus=2)
    assert placement.members_per_gpu == 2
    for node in range(2):
        ranks = range(4 * node, 4 * node + 4)
        gpus = {rank: placement.gpu(rank - 4 * node) for rank in ranks}  # the local rank, as pick_device passes it
        assert sorted(set(gpus.values())) == [0, 1]
        for gpu in (0, 1):
            sharing = [divmod(rank, 2) for rank in ranks if gpus[rank] == gpu]  # (member, replica)
            assert len({replica for _, replica in sharing}) == 1
            assert sorted(member for member, _ in sharing) == [2 * node, 2 * node + 1]
    assert placement.gpu(launch.local_rank) == 0  # rank 6 = member 3, replica 0, with member 2's replica 0


def test_a_pinned_rank_of_the_second_node_takes_its_local_share_of_the_cores_and_threads():
    """train.pin_cores and the default thread count through detect_launch and configure_threads in a child
    process, with the second node's variables: its share is its local rank's of the node's cores, its
    threads the node's cores over its local ranks (the global rank, 6 of 8, would be past a 4-rank node's cores)."""
    code = (
        "import os, torch; from cohort.config import CohortConfig; "
        "from cohort.dist.mesh import configure_threads, detect_launch; "
        "c = CohortConfig(); c.train.pin_cores = True; c.train.threads_per_rank = 0; launch = detect_launch(); "
        "before = sorted(os.sched_getaffinity(0)); configure_threads(c, launch.local_world_size, launch.local_rank); "
        "print(before, sorted(os.sched_getaffinity(0)), [torch.get_num_threads(), os.cpu_count()])"
    )
    env = {**os.environ, **SECOND_NODE, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    before, after, (threads, cpus) = (
        json.loads(part) for part in result.stdout.strip().replace("] [", "]|[").split("|")
    )
    assert after == rank_cores(before, 4, 2)
    assert threads == max(1, cpus // 4)
