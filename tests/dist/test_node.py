"""Nodes (``cohort.dist.node``): which node a rank runs on, and the layout in words. Cohorts on
two nodes for real are ``tests/scenarios/test_two_agents.py``."""

from __future__ import annotations

import socket

from cohort.dist.node import Node, layout, layout_record, nodes_of_record, rank_span, this_node, where

HOST = socket.gethostname()


def test_a_node_is_torchruns_group_rank_else_slurms_node_id_named_by_its_host():
    assert this_node({"GROUP_RANK": "1", "SLURM_NODEID": "3"}) == Node(1, HOST)  # torchrun inside SLURM
    assert this_node({"SLURM_NODEID": "2", "SLURMD_NODENAME": "gpu-07"}) == Node(2, "gpu-07")
    assert this_node({}) == Node(0, HOST)
    assert str(Node(1, "gpu-07")) == "node 1 (gpu-07)"


def test_the_layout_names_each_nodes_ranks_and_members():
    two = [Node(0, "a")] * 2 + [Node(1, "b")] * 2
    assert layout(two, replicas=2) == "node 0 (a): ranks 0-1 (member 0); node 1 (b): ranks 2-3 (member 1)"
    assert layout(two, replicas=1) == "node 0 (a): ranks 0-1 (members 0, 1); node 1 (b): ranks 2-3 (members 2, 3)"
    assert rank_span([0, 2]) == "ranks 0, 2" and rank_span([5]) == "rank 5"
    assert nodes_of_record(layout_record(two, 2)) == two
    assert layout_record(two, 2)["ranks"][3] == {"rank": 3, "member": 1, "replica": 1, "node": 1, "host": "b"}


def test_silent_ranks_are_placed_naming_a_whole_node_as_such():
    two = [Node(0, "a")] * 2 + [Node(1, "b")] * 2
    assert where([2, 3], two) == "all of node 1 (b), ranks 2-3"
    assert where([1, 3], two) == "rank 1 on node 0 (a); rank 3 on node 1 (b)"
    assert where([1], [Node(0, "a")] * 2) == "rank 1 on node 0 (a)"  # one node is never "all of" it
