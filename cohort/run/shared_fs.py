"""The run directory must be on a file system every node of the job sees.

Each member's replica 0 writes that member's checkpoint parts on the node it runs on, and
every rank resumes from the parts of all members (design.md §1): on a folder that is local
to each node, every node would hold only its own members' parts, and a resumed run would
find no complete checkpoint and start over without a word. So at start, once rank 0 has
created the folder, the first rank of each node writes a marker ``RUN_DIR/nodes/<node>``
holding this start's token, and after a barrier every rank reads every node's marker; one
missing (or left by another start) stops every rank with one line naming the node and the
path. A job on one node writes and checks nothing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import torch.distributed as dist

from cohort.dist.mesh import CohortMesh
from cohort.dist.node import this_node
from cohort.errors import CohortError
from cohort.run.directory import RunDir
from cohort.run.files import write_json


class NotSharedError(CohortError, RuntimeError):
    """The run directory is not the same folder on every node of the job."""


def marker_path(run_path: Path, node: str) -> Path:
    return RunDir(run_path).node_marker(node)


def write_marker(run_path: Path, node: str, token: str) -> str:
    """The first rank of ``node``: its marker in the run directory; the problem, or ""."""
    if not Path(run_path).is_dir():  # never create the run directory where rank 0 did not
        return f"{run_path} does not exist on node {node}, where rank 0 created it"
    marker = marker_path(run_path, node)
    try:
        marker.parent.mkdir(exist_ok=True)
        write_json(marker, {"node": node, "token": token})
    except (OSError, CohortError) as error:  # reported by every rank together, not by this one alone
        return f"node {node} cannot write its marker {marker} ({error})"
    return ""


def missing_marker(run_path: Path, nodes: list[str], token: str, here: str) -> str:
    """The first of ``nodes`` whose marker of this start (``token``) this node cannot read, as
    the one-line problem; "" when every marker is there."""
    for node in nodes:
        marker = marker_path(run_path, node)
        try:
            seen = json.loads(marker.read_text()).get("token")
        except (OSError, ValueError, AttributeError):  # absent (written whole or not at all: write_json)
            seen = None
        if seen != token:
            return (
                f"run_dir {run_path} is not on a file system every node sees: node {node}'s marker {marker} "
                f"is missing on node {here}; put run_dir on a shared file system (NFS, Lustre, ...) that "
                f"every node mounts at the same path"
            )
    return ""


def check_shared_run_dir(run_path: Path, mesh: CohortMesh, node: str | None = None) -> None:
    """Raise NotSharedError on every rank unless every node of the job sees the same run
    directory (a collective: every rank calls it, after rank 0 created the folder)."""
    # By host name, not node index: two torchrun agents on one machine share its file system.
    node = node or this_node().host
    everyone: list = [None] * mesh.world_size
    dist.all_gather_object(everyone, (node, uuid.uuid4().hex))
    nodes = list(dict.fromkeys(name for name, _ in everyone))
    if len(nodes) == 1:
        return
    token = everyone[0][1]  # rank 0's: this start's, so a marker left by an earlier start does not count
    first_of_node = next(rank for rank, (name, _) in enumerate(everyone) if name == node)
    problem = write_marker(run_path, node, token) if mesh.rank == first_of_node else ""
    mesh.barrier()  # every node's marker is written before any is read
    problem = mesh.first_problem(problem or missing_marker(run_path, nodes, token, node))
    if problem:
        raise NotSharedError(problem, shared=True)
