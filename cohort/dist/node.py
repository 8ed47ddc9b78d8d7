"""Which node a rank runs on, in the words a user finds the machine by: the launcher's node
index and the host's name.

    torchrun   GROUP_RANK (the node rank torchrun gave this agent; with ``--rdzv-backend c10d``
               torchrun assigns it itself, ordered by host name, and ignores ``--node-rank``)
    SLURM      SLURM_NODEID, and SLURMD_NODENAME (the node's name to SLURM, which
               ``slurmd -N NAME`` sets even when several node daemons share one machine)
    elsewhere  node 0

Every rank learns every rank's node when it joins the cohort (``CohortMesh.nodes``), so a
rank that loses its peers can name the nodes they ran on after they are gone; rank 0 records
the layout in ``RUN_DIR/nodes.json`` for ``cohort status``. Torch-free: ``cohort status``
reads it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    """A node of the run: the launcher's index for it and its host name."""

    index: int
    host: str

    def __str__(self) -> str:
        return f"node {self.index} ({self.host})"


def this_node(env: dict[str, str] | None = None) -> Node:
    """The node this process runs on; torchrun's variables first, as ``cohort.dist.mesh.detect_launch``
    reads torchrun's environment before SLURM's (a torchrun inside a SLURM job)."""
    env = os.environ if env is None else env
    if "GROUP_RANK" in env:
        index = int(env["GROUP_RANK"])
    elif "SLURM_NODEID" in env:
        index = int(env["SLURM_NODEID"])
    else:
        index = 0
    return Node(index, env.get("SLURMD_NODENAME") or socket.gethostname())


def rank_span(ranks: list[int]) -> str:
    """``ranks 2-3``, ``rank 5``, ``ranks 0, 2``: a sorted list of ranks in words."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    if ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]}-{ranks[-1]}"
    return "ranks " + ", ".join(map(str, ranks))


def members_of(ranks: list[int], replicas: int) -> str:
    """``member 1`` or ``members 0, 1``: the members the ranks (rank = member · R + replica) belong to."""
    members = sorted({rank // replicas for rank in ranks})
    return f"member{'s' if len(members) > 1 else ''} {', '.join(map(str, members))}"


def by_node(ranks: list[int], nodes: list[Node]) -> dict[Node, list[int]]:
    """The ranks grouped by the node each runs on (``nodes[rank]``), in node order."""
    grouped: dict[Node, list[int]] = {}
    for rank in sorted(ranks):
        grouped.setdefault(nodes[rank], []).append(rank)
    return dict(sorted(grouped.items(), key=lambda item: (item[0].index, item[0].host)))


def layout(nodes: list[Node], replicas: int) -> str:
    """Which ranks and members each node holds, in one line:
    ``node 0 (a): ranks 0-1 (member 0); node 1 (b): ranks 2-3 (member 1)``."""
    return "; ".join(
        f"{node}: {rank_span(ranks)} ({members_of(ranks, replicas)})"
        for node, ranks in by_node(list(range(len(nodes))), nodes).items()
    )


def where(ranks: list[int], nodes: list[Node]) -> str:
    """Where the ranks ran, naming a node whose every rank is among them as a whole:
    ``all of node 1 (b), ranks 2-3`` or ``rank 1 on node 0 (a)``."""
    everywhere = by_node(list(range(len(nodes))), nodes)
    parts = []
    for node, here in by_node(ranks, nodes).items():
        whole = here == everywhere[node] and len(everywhere) > 1
        parts.append(f"all of {node}, {rank_span(here)}" if whole else f"{rank_span(here)} on {node}")
    return "; ".join(parts)


def layout_record(nodes: list[Node], replicas: int) -> dict:
    """``RUN_DIR/nodes.json``: every rank's member, replica and node."""
    return {
        "ranks": [
            {"rank": r, "member": r // replicas, "replica": r % replicas, "node": node.index, "host": node.host}
            for r, node in enumerate(nodes)
        ]
    }


def nodes_of_record(record: dict) -> list[Node]:
    """The nodes of ``RUN_DIR/nodes.json``'s ranks, by rank."""
    return [Node(row["node"], row["host"]) for row in sorted(record["ranks"], key=lambda row: row["rank"])]
