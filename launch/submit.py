"""``cohort submit``: a cohort as a SLURM job through submitit, one task per rank.

    cohort submit CONFIG [key=value ...] --nodes N --gpus-per-node G --partition P --time MIN

Every task runs one rank in-process (no torchrun inside the job): it reads
``submitit.JobEnvironment()`` and meets its peers on the first host, at a port derived
from the job id (``cohort.dist.mesh.slurm_launch``). ``--seeds`` submits a job array, one
cohort per seed, each in ``RUN_DIR/seed<N>``.

Preemption and time limits. SLURM sends SIGUSR2 ``--signal-delay-s`` before the time
limit (submitit's ``--signal``), and SIGTERM when it preempts or requeues a job. Every
rank takes either as a stop request; the ranks agree on a step, each saves its member's
part, and only then does global rank 0 hand SIGUSR2 to submitit, which calls
``CohortJob.checkpoint`` and requeues the job. (After SIGTERM SLURM requeues the job
itself.) The job always runs with ``resume=auto``, so when it comes back it continues
from the newest complete checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import submitit

from cohort.config import CohortConfig, ConfigError, load_config
from cohort.dist.stopping import Startup, StoppedAtStartup
from cohort.preflight import check_seeds, plan_run
from cohort.run.directory import RunDir
from cohort.run.files import write_json
from cohort.run.hold import RunHold


class SubmitError(ConfigError):
    """The job asked for cannot run this config (size, partition, cluster); the message names
    the fix. A ConfigError, so the command reports it the same way: one line, exit code 2."""


class JobFailed(RuntimeError):
    """A rank's training ended with an error (printed above it in the task's log)."""


class CohortJob(submitit.helpers.Checkpointable):
    """The callable each SLURM task runs: one rank of the cohort."""

    def __init__(self, config_path: str, overrides: list[str]):
        self.config_path, self.overrides = config_path, overrides

    def __call__(self) -> dict:
        env = submitit.JobEnvironment()
        # submitit's handlers requeue from rank 0 at once, in the middle of a step, and only log
        # SIGTERM (every task): the ranks replace them, and rank 0 calls the requeue itself once
        # the ranks have saved at an agreed step, or left their start-up at once (``Startup``,
        # installed before torch is imported: seconds, on a loaded node).
        # (_usr_sig: SIGUSR2 unless $SUBMITIT_PREEMPT_SIGNAL names another.)
        submitit_signal = env._usr_sig()
        checkpoint_and_requeue = signal.getsignal(submitit_signal)
        startup = Startup()
        startup.install()
        try:
            from cohort.dist.mesh import slurm_launch
            from cohort.train.worker import run_worker
        except StoppedAtStartup as stop:
            stopped_by, exit_code = stop.signum, 0
        else:
            launch = slurm_launch(
                env.global_rank,
                env.num_tasks,
                env.local_rank,
                env.num_tasks // env.num_nodes,
                list(env.hostnames),
                int(env.raw_job_id),
            )
            outcome = run_worker([self.config_path, *self.overrides], launch, startup)
            stopped_by, exit_code = outcome.stopped_by, outcome.exit_code
        rank = env.global_rank
        if stopped_by == submitit_signal and rank == 0 and callable(checkpoint_and_requeue):
            checkpoint_and_requeue(submitit_signal, None)  # requeues the job and exits this process
        if exit_code:
            raise JobFailed(f"rank {rank} failed (exit code {exit_code}); its error is printed above")
        return {"rank": rank, "stopped_by": stopped_by}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on rank 0 once every rank has saved: run this same job again.
        Its overrides hold ``resume=auto``, so it continues from the newest checkpoint."""
        return submitit.helpers.DelayedSubmission(CohortJob(self.config_path, self.overrides))


@dataclass(frozen=True)
class Resources:
    """What each job asks SLURM for."""

    nodes: int
    tasks_per_node: int
    partition: str
    time_min: int
    cpus_per_task: int | None
    cpu: bool
    signal_delay_s: int
    max_timeouts: int

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node


def check_world_size(config: CohortConfig, resources: Resources) -> None:
    if resources.tasks != config.world_size:
        unit = "tasks" if resources.cpu else "GPUs"
        raise SubmitError(
            f"--nodes {resources.nodes} × --gpus-per-node {resources.tasks_per_node} = {resources.tasks} {unit}, but "
            f"the config needs K×R = {config.num_members}×{config.replicas} = {config.world_size} ranks (one per "
            f"{'task' if resources.cpu else 'GPU'}); change --nodes/--gpus-per-node, or replicas="
        )


def check_partition(resources: Resources) -> None:
    """The partition must exist on the cluster ``sbatch`` talks to, and be able to hold the
    job: SLURM accepts a job no node can ever run and leaves it pending for good."""
    if shutil.which("sbatch") is None:
        raise SubmitError(
            "sbatch is not on PATH: cohort submit needs a SLURM cluster's commands "
            "(to try it on this machine: sudo slurm/local-cluster.sh up)"
        )
    listed = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%R %N %c"], capture_output=True, text=True)
    if listed.returncode != 0:
        reason = (listed.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise SubmitError(f"cannot reach the SLURM controller ({reason}); is SLURM_CONF set and the cluster up?")
    cpus_of_node: dict[str, dict[str, int]] = {}
    for line in listed.stdout.splitlines():
        name, node, cpus = line.split()
        cpus_of_node.setdefault(name, {})[node] = int(cpus)
    if resources.partition not in cpus_of_node:
        raise SubmitError(
            f"partition '{resources.partition}' does not exist on this cluster; use --partition with one "
            f"of: {', '.join(sorted(cpus_of_node)) or '(none)'}"
        )
    nodes = cpus_of_node[resources.partition]
    if resources.nodes > len(nodes):
        raise SubmitError(
            f"--nodes {resources.nodes} but partition '{resources.partition}' has {len(nodes)} node(s); "
            f"use fewer nodes and more tasks per node, or another partition"
        )
    cpus = resources.tasks_per_node * (resources.cpus_per_task or 1)
    if cpus > max(nodes.values()):
        raise SubmitError(
            f"{resources.tasks_per_node} task(s) per node × {resources.cpus_per_task or 1} CPU(s) per "
            f"task = {cpus} CPUs, but the nodes of partition '{resources.partition}' have at most "
            f"{max(nodes.values())}; lower --cpus-per-task or spread the tasks over more --nodes"
        )


def build_executor(folder: Path, name: str, resources: Resources) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=resources.max_timeouts)
    gpus = {} if resources.cpu else {"gpus_per_node": resources.tasks_per_node}
    cpus = {"cpus_per_task": resources.cpus_per_task} if resources.cpus_per_task else {}
    executor.update_parameters(
        name=name,
        nodes=resources.nodes,
        tasks_per_node=resources.tasks_per_node,
        timeout_min=resources.time_min,
        slurm_partition=resources.partition,
        slurm_signal_delay_s=resources.signal_delay_s,
        # Preemption may put the job back in the queue (submitit already appends to the
        # logs, so a requeued attempt's lines follow the first attempt's).
        slurm_additional_parameters={"requeue": True},
        **gpus,
        **cpus,
    )
    return executor


def outermost_missing(path: Path) -> Path | None:
    """The highest folder on the way to ``path`` that does not exist yet (None if it exists)."""
    missing, path = None, path.absolute()
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def submit(config_path: str, overrides: list[str], resources: Resources, seeds: list[int] | None) -> list[dict]:
    """Check everything, then queue one job (or an array, one task per seed); returns the
    submissions as written to each run directory's ``submission.json``."""
    config_path = str(Path(config_path).resolve())
    check_seeds(seeds or [])
    base = load_config(config_path, overrides)
    forced = ["resume=auto"] + (["train.device=cpu"] if resources.cpu else [])
    if not resources.cpu and base.train.device == "cpu":
        raise ConfigError(
            "the config trains on the CPU (train.device=cpu) but the job asks for GPUs; "
            "pass --cpu, or train.device=cuda"
        )
    runs: list[tuple[list[str], CohortConfig]] = []
    for seed in seeds if seeds else [None]:
        extra = [] if seed is None else [f"seed={seed}", f"run_dir={Path(base.run_dir) / f'seed{seed}'}"]
        run_overrides = [*overrides, *extra, *forced]
        runs.append((run_overrides, load_config(config_path, run_overrides)))
    check_world_size(base, resources)
    check_partition(resources)
    for _, config in runs:
        plan_run(config, write_data=True)
        RunHold.check_free(config.run_dir)  # the job's rank 0 takes the hold when it starts

    # Nothing was written or queued before this point. The run directories exist before the
    # job can start (a worker refuses a folder that holds only submitit's files).
    logs = RunDir(base.run_dir).slurm_logs
    created = {outermost_missing(path) for path in [logs, *(Path(config.run_dir) for _, config in runs)]} - {None}
    for _, config in runs:
        RunDir(config.run_dir).create(config)
    executor = build_executor(logs, base.name, resources)
    try:
        # submitit prints sbatch's complaint itself before raising it; it is reported below, once.
        with contextlib.redirect_stderr(io.StringIO()):
            if seeds:
                with executor.batch():
                    jobs = [executor.submit(CohortJob(config_path, run_overrides)) for run_overrides, _ in runs]
            else:
                jobs = [executor.submit(CohortJob(config_path, runs[0][0]))]
    except submitit.core.utils.FailedJobError as refusal:
        for folder in created:  # leave no trace of a job that was never queued
            shutil.rmtree(folder, ignore_errors=True)
        reason = (str(refusal).strip().splitlines() or ["no reason given"])[-1]
        raise SubmitError(f"sbatch refused the job ({reason}); nothing was queued") from None

    submissions = []
    for job, (run_overrides, config) in zip(jobs, runs):
        record = {
            "job_id": job.job_id,
            "submitted": datetime.datetime.now().isoformat(timespec="seconds"),
            "run_dir": str(Path(config.run_dir).resolve()),
            "config": config_path,
            "overrides": run_overrides,
            "nodes": resources.nodes,
            "tasks_per_node": resources.tasks_per_node,
            "partition": resources.partition,
            "time_min": resources.time_min,
            "cpu": resources.cpu,
            "logs": [str(job.task(rank).paths.stdout) for rank in range(resources.tasks)],
            "errors": [str(job.task(rank).paths.stderr) for rank in range(resources.tasks)],
        }
        # The job is queued already: a failed write (a full disk) says so.
        then = f"note that job {job.job_id} is queued regardless (scancel it before submitting again)"
        write_json(RunDir(config.run_dir).submission_file, record, then=then, indent=1)
        submissions.append(record)
        device = "CPU task" if resources.cpu else "GPU"
        print(
            f"cohort: submitted job {job.job_id}: {config.name} seed {config.seed}, {resources.tasks} × {device} on "
            f"{resources.nodes} node(s) of partition {resources.partition}\n"
            f"  run directory  {config.run_dir}\n"
            f"  logs           {record['logs'][0]}  (task 0; stderr in {Path(record['errors'][0]).name})\n"
            f"  where it is    cohort status {config.run_dir}",
            flush=True,
        )
    return submissions


def main_submit(args) -> int:
    resources = Resources(
        nodes=args.nodes,
        tasks_per_node=args.gpus_per_node,
        partition=args.partition,
        time_min=args.time,
        cpus_per_task=args.cpus_per_task,
        cpu=args.cpu,
        signal_delay_s=args.signal_delay_s,
        max_timeouts=args.max_timeouts,
    )
    for flag, value, least in (
        ("--nodes", args.nodes, 1),
        ("--gpus-per-node", args.gpus_per_node, 1),
        ("--time", args.time, 1),
        ("--cpus-per-task", 1 if args.cpus_per_task is None else args.cpus_per_task, 1),
        ("--signal-delay-s", args.signal_delay_s, 0),
        ("--max-timeouts", args.max_timeouts, 0),
    ):
        if value < least:
            raise SubmitError(f"{flag} must be at least {least}, not {value}")
    submit(args.config, args.overrides, resources, args.seeds)
    return 0
