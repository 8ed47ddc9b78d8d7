"""Opening a run directory for training: what happens once, before the ranks resume and train.

Every rank calls ``open_run`` after building its trainer (a rank that cannot build its
member stops before the folder exists, so a retry with ``resume=never`` is not refused):

1. a barrier: every rank has checked the folder (``cohort.preflight.plan_run``) before it changes;
2. rank 0 takes the run directory's hold (``cohort.run.hold``), or joins its launcher's;
3. rank 0 creates the folder (its config.yaml), writes the teachers' plan and which node each
   rank runs on (``nodes.json``; said in the log when the ranks span several nodes);
4. every rank checks that the folder is the same on every node (``cohort.run.shared_fs``),
   before any resumes from checkpoint parts written on every node.

What rank 0 does, every rank waits for (``CohortMesh.main_does``): a held folder or a full
disk stops them all with one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cohort.dist.mesh import CohortMesh
from cohort.dist.node import Node, layout, layout_record
from cohort.run.directory import RunDir
from cohort.run.files import write_json
from cohort.run.hold import RunHold
from cohort.run.shared_fs import check_shared_run_dir

if TYPE_CHECKING:
    from cohort.preflight import RunPlan


def open_run(plan: RunPlan, mesh: CohortMesh) -> RunHold | None:
    """Hold, create and check the run directory (a collective); rank 0's hold, which the caller
    releases when training ends (None on the other ranks). A failure releases it here."""
    run = RunDir(plan.config.run_dir)
    taken: list[RunHold] = []
    mesh.barrier()
    mesh.main_does(lambda: taken.append(RunHold.acquire(run.path, "cohort train")))
    try:
        mesh.main_does(lambda: create_run(run, plan, mesh.nodes))
        check_shared_run_dir(run.path, mesh)
    except BaseException:
        for hold in taken:
            hold.release()
        raise
    return taken[0] if taken else None


def create_run(run: RunDir, plan: RunPlan, nodes: list[Node]) -> None:
    """Rank 0: the folders and config.yaml (unless there), the teachers' plan, and ``nodes.json``."""
    run.create(plan.config)
    if plan.teachers is not None:
        write_json(run.teacher_plan_file, plan.teachers.record())
    replicas = plan.config.replicas
    write_json(run.nodes_file, layout_record(nodes, replicas))
    if len(set(nodes)) > 1:
        print(f"cohort: ranks on {len(set(nodes))} nodes: {layout(nodes, replicas)}", flush=True)
