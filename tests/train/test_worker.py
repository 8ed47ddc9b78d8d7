"""How a rank's end is reported (``cohort.train.worker``), in-process on a real TCPStore: a peer
that failed with an error of its own is named with that error, not as a lost peer."""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest
import torch.distributed as dist

from cohort.config import load_config
from cohort.dist.mesh import Launch, _free_port
from cohort.dist.node import Node
from cohort.train.worker import lost_peers_message, tell_peers_of_failure
from tests.conftest import tiny_config


@pytest.fixture
def store():
    port = _free_port()
    return dist.PrefixStore(
        "cohort/attempt-0",
        dist.TCPStore("127.0.0.1", port, 1, is_master=True, timeout=datetime.timedelta(seconds=10)),
    )


def rank_of(rank: int, world: int = 4) -> Launch:
    return Launch("torchrun", rank, world, rank, world, "127.0.0.1", 0)


def test_a_peer_that_failed_with_an_error_is_named_with_it(store, tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root, members=2), ["replicas=2"])
    tell_peers_of_failure(store, 3, ValueError("the trace folder is a file\nsecond line"))
    message = lost_peers_message(store, rank_of(0), config, step=7)
    assert message == (
        "member 0 (rank 0) stopped at step 7: member 1 (rank 3) failed with an error (ValueError: the trace "
        "folder is a file), printed in full above; fix that, then continue with resume=auto"
    )


def test_without_a_failure_record_the_silent_members_are_named(store, tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root, members=2))
    store.set("cohort/alive/1", "7")  # rank 1 answers; ranks 2 and 3 (of a 4-rank cohort) never do
    message = lost_peers_message(store, rank_of(0), config, step=7)
    assert message.startswith("member 0 (rank 0) lost the cohort at step 7: member(s) 2, 3 stopped answering")
    assert message.endswith("continue with resume=auto")


def test_the_silent_ranks_nodes_are_named_and_a_node_silent_whole_as_such(store, tmp_path, digits_root):
    config = load_config(tiny_config(tmp_path, digits_root, members=2), ["replicas=2"])
    nodes = [Node(0, "a")] * 2 + [Node(1, "b")] * 2
    store.set("cohort/alive/1", "7")  # rank 1, on rank 0's node, answers; node 1's ranks never do
    message = lost_peers_message(store, rank_of(0), config, step=7, nodes=nodes)
    assert message == (
        "member 0 (rank 0) lost the cohort at step 7 on node 0 (a): member(s) 1 stopped answering (all of node 1 "
        "(b), ranks 2-3) (dead, or stalled longer than train.dist_timeout_s=120s); continue with resume=auto"
    )
    tell_peers_of_failure(store, 3, ValueError("the trace folder is a file"))
    message = lost_peers_message(store, rank_of(0), config, step=7, nodes=nodes)
    assert message.startswith(
        "member 0 (rank 0) stopped at step 7 on node 0 (a): member 1 (rank 3 on node 1 (b)) failed with an error"
    )


def test_a_rank_whose_store_went_down_with_its_node_names_the_stores_address(tmp_path, digits_root):
    """The store's server in a child process, SIGKILLed as a lost head node would take it."""
    config = load_config(tiny_config(tmp_path, digits_root, members=2), ["replicas=2"])
    port = _free_port()
    code = (
        "import datetime, sys, time, torch.distributed as dist; "
        f"s = dist.TCPStore('127.0.0.1', {port}, None, is_master=True, wait_for_workers=False); "
        "print('serving', flush=True); time.sleep(600)"
    )
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "serving"
        client = dist.TCPStore("127.0.0.1", port, None, is_master=False, timeout=datetime.timedelta(seconds=10))
        client.set("cohort/alive/0", "7")
    finally:
        server.kill()
        server.wait()
    nodes = [Node(0, "a")] * 2 + [Node(1, "b")] * 2
    launch = Launch("torchrun", 2, 4, 0, 2, "127.0.0.1", port)
    assert lost_peers_message(client, launch, config, step=7, nodes=nodes) == (
        f"member 1 (rank 2) lost the cohort at step 7 on node 1 (b): the rendezvous store at 127.0.0.1:{port} is "
        "gone, likely with the node serving it (dead, or stalled longer than train.dist_timeout_s=120s); continue "
        "with resume=auto"
    )
