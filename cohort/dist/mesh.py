"""Who am I in the cohort: launcher detection, this rank's device, threads and cores, the
process group and the (member, replica) mesh.

    world = K members × R replicas,   rank = member · R + replica   (member-major)

``replica_group`` is a member's data-parallel group (DDP); ``member_group`` is the
exchange group of the K ranks holding replica r of every member. Their backends follow the
placement of ranks on GPUs (``cohort/dist/placement.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from cohort.config import CohortConfig
from cohort.errors import CohortError
from cohort.dist.node import Node, this_node
from cohort.dist.placement import Placement, PlacementError, place, rank_cores


class LaunchError(CohortError, RuntimeError):
    """The processes started do not fit the config (count, GPUs)."""


@dataclass(frozen=True)
class Launch:
    """How this process was started and where its peers rendezvous."""

    launcher: str  # "torchrun", "slurm" or "single"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def detect_launch(env: dict[str, str] | None = None) -> Launch:
    """torchrun's environment, else SLURM's (one srun task per rank), else a single process."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return Launch(
            "torchrun",
            int(env["RANK"]),
            int(env["WORLD_SIZE"]),
            int(env.get("LOCAL_RANK", 0)),
            int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
            env.get("MASTER_ADDR", "127.0.0.1"),
            int(env.get("MASTER_PORT", 29500)),
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True
        ).stdout.split()
        return slurm_launch(
            int(env["SLURM_PROCID"]),
            int(env["SLURM_NTASKS"]),
            int(env["SLURM_LOCALID"]),
            int(env["SLURM_NTASKS"]) // len(hosts),
            hosts,
            int(env["SLURM_JOB_ID"]),
        )
    return Launch("single", 0, 1, 0, 1, "127.0.0.1", _free_port())


def slurm_launch(
    rank: int, world_size: int, local_rank: int, local_world_size: int, hosts: list[str], job_id: int
) -> Launch:
    """A rank of a SLURM job (srun or submitit): rank 0's host serves the store on a port
    derived from the job id, so every task computes the same address with no exchange,
    a requeued job (same id) finds it again, and jobs sharing a node do not collide.
    Each task of a job array has its own job id."""
    return Launch("slurm", rank, world_size, local_rank, local_world_size, hosts[0], 20000 + job_id % 20000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure_threads(config: CohortConfig, local_world_size: int, local_rank: int = 0) -> None:
    """torch's intra-op threads for this rank: explicit, or the cores shared among local ranks;
    with ``train.pin_cores``, the rank (and the loader threads it starts later) keeps to its
    own share of the cores."""
    if config.train.pin_cores:
        os.sched_setaffinity(0, rank_cores(sorted(os.sched_getaffinity(0)), local_world_size, local_rank))
    threads = config.train.threads_per_rank or max(1, (os.cpu_count() or 1) // local_world_size)
    torch.set_num_threads(threads)


def uses_cuda(requested: str) -> bool:
    """Whether ``train.device`` = ``requested`` puts the ranks on GPUs."""
    return requested == "cuda" or (requested == "auto" and torch.cuda.is_available())


def pick_device(
    requested: str, launch: Launch, members_per_gpu: int | str = 1, members: int = 1, replicas: int = 1
) -> tuple[torch.device, Placement]:
    """This rank's device and the node's placement: ``cuda:<its GPU>`` (one rank per GPU, or
    ``members_per_gpu`` members sharing one; ``cohort/dist/placement.py``) or the CPU."""
    if not uses_cuda(requested):
        return torch.device("cpu"), Placement(1, replicas)
    try:
        placement = place(members_per_gpu, members, replicas, launch.local_world_size, torch.cuda.device_count())
    except PlacementError as error:
        raise LaunchError(str(error)) from None
    return torch.device("cuda", placement.gpu(launch.local_rank)), placement


def rendezvous_store(launch: Launch, timeout_s: float) -> dist.Store:
    """The key-value store the ranks meet in, namespaced by torchrun's restart attempt.

    torchrun's agent serves one store for the whole job, and the keys of an attempt's
    process groups outlive it: without the attempt in their names, the subgroups of a
    restarted cohort read their dead predecessors' addresses and fail to connect.
    Elsewhere global rank 0 serves the store.
    """
    agent_serves = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        launch.master_addr,
        launch.master_port,
        launch.world_size,
        is_master=launch.rank == 0 and not agent_serves,
        timeout=timedelta(seconds=timeout_s),
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"cohort/attempt-{attempt}", store)


def join_cohort(config: CohortConfig, launch: Launch, replicas: int | None = None) -> CohortMesh:
    """This rank's threads, device and mesh: how a training or evaluation rank joins the cohort
    (``replicas``: per member, default the config's)."""
    replicas = replicas or config.replicas
    configure_threads(config, launch.local_world_size, launch.local_rank)
    device, placement = pick_device(
        config.train.device, launch, config.train.members_per_gpu, config.num_members, replicas
    )
    return CohortMesh(config.num_members, replicas, launch, device, config.train.dist_timeout_s, placement)


class CohortMesh:
    """The process group of this rank and its two subgroups: its member's replicas and the
    members' replica-r ranks."""

    def __init__(
        self,
        members: int,
        replicas: int,
        launch: Launch,
        device: torch.device,
        timeout_s: float,
        placement: Placement | None = None,
    ):
        if launch.world_size != members * replicas:
            raise LaunchError(
                f"{launch.world_size} processes were started but the config needs K×R = {members}×{replicas} = "
                f"{members * replicas}; start {members * replicas} "
                f"(e.g. torchrun --nproc-per-node {members * replicas})"
            )
        self.launch, self.device = launch, device
        self.rank, self.world_size = launch.rank, launch.world_size
        self.members, self.replicas = members, replicas
        self.member, self.replica = divmod(launch.rank, replicas)
        placement = placement or Placement(1, replicas)
        backends = placement.backends(device.type)
        # Where each group's tensors must be: gloo groups of CUDA ranks go through host memory.
        self.world_device, self.member_device = (
            device if backends[g] == "nccl" else torch.device("cpu") for g in ("world", "member")
        )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.store = rendezvous_store(launch, timeout_s)
        timeout = timedelta(seconds=timeout_s)
        if not dist.is_initialized():
            # device_id binds NCCL to this rank's GPU up front (without it, NCCL guesses the GPU from
            # the global rank and warns at the first barrier).
            dist.init_process_group(
                backend=backends["world"],
                store=self.store,
                rank=launch.rank,
                world_size=launch.world_size,
                timeout=timeout,
                device_id=device if backends["world"] == "nccl" else None,
            )
        # Every rank creates every group, in the same order (torch.distributed's rule).
        self.replica_group, _ = dist.new_subgroups_by_enumeration(
            [[m * replicas + r for r in range(replicas)] for m in range(members)],
            timeout=timeout,
            backend=backends["replica"],
        )
        self.member_group, _ = dist.new_subgroups_by_enumeration(
            [[m * replicas + r for m in range(members)] for r in range(replicas)],
            timeout=timeout,
            backend=backends["member"],
        )
        # Every rank's node, gathered while every rank lives: a rank that loses its peers names
        # the nodes they ran on (``cohort.train.worker``), and rank 0 records the layout (``cohort.dist.node``).
        here = this_node()
        self.nodes: list[Node] = [here] * self.world_size
        dist.all_gather_object(self.nodes, here)

    @property
    def is_main(self) -> bool:
        """Global rank 0: the rank that writes shared files."""
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def max_over_ranks(self, value: int) -> int:
        """The largest of every rank's ``value`` (a collective: every rank must call it)."""
        reduced = torch.tensor([float(value)], device=self.world_device)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        return int(reduced.item())

    def any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (a collective)."""
        return self.max_over_ranks(int(flag)) > 0

    def main_does(self, work: Callable[[], Any]) -> Any:
        """``work()`` on rank 0 only (it writes the run's shared files); its result on every
        rank, or the CohortError it raised (a full disk) raised on every rank as a shared one,
        printed once (``cohort.errors``). A collective: the other ranks wait for it; without
        the agreement they would run on into their next collective and each report rank 0 lost."""
        outcome: list = [(None, "")]
        failed = None
        if self.is_main:
            try:
                outcome = [(work(), "")]
            except CohortError as error:
                failed, outcome = error, [(None, str(error))]
        dist.broadcast_object_list(outcome, src=0)
        result, problem = outcome[0]
        if failed is not None:
            failed.shared = True
            raise failed
        if problem:  # the same error here, for the exit code; rank 0 prints it
            raise CohortError(problem, shared=True)
        return result

    def first_problem(self, problem: str) -> str:
        """The first non-empty ``problem`` of any rank (by rank), or "" (a collective): ranks
        that each did their own part (read or wrote their member's checkpoint part) agree on
        whether every part went well before any of them goes on."""
        problems = [""] * self.world_size
        dist.all_gather_object(problems, problem)
        return next((p for p in problems if p), "")

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
