"""Where the teachers of an ODS distillation should live: both costs per step, side by side.

    python bench/teacher_placement.py                                   # 4 ImageNet ResNet-50 teachers
    python bench/teacher_placement.py --arch wrn28_10 --classes 100 --resolution 32 --batch 64

ODS computes one x′ per step from one teacher, drawn at random, and every student needs
that x′ (``cohort.train.teachers``). Two layouts:

- ``every rank holds every teacher``: the student rank computes x′ itself; it pays the
  memory of J teachers and no communication.
- ``teacher m beside student m``: the chosen teacher's rank computes x′ and broadcasts it to
  the others; each rank holds one teacher, and every step pays a broadcast of x′ (the
  other ranks wait for the chosen one's ODS step either way).

This measures, in one run: a teacher's weights and buffers (bytes), the ODS step (the
chosen teacher's forward and input-gradient) and the target forward of one teacher on the
batch, and the broadcast of x′ among J real processes over gloo (CPU) or NCCL (``--device
cuda``, one process per GPU). It prints both layouts' per-step time and memory and their ratios.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cohort.models import build_model
from cohort.train.teachers import ods_direction, ods_perturbation


def timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def broadcast_worker(rank: int, world: int, port: int, shape: tuple, repeats: int, device: str, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if device == "cuda" else "gloo"
    where = torch.device(f"cuda:{rank}") if device == "cuda" else torch.device("cpu")
    dist.init_process_group(backend, rank=rank, world_size=world, **({"device_id": where} if device == "cuda" else {}))
    x_prime = torch.rand(shape, device=where)
    sync = (lambda: torch.cuda.synchronize(where)) if device == "cuda" else (lambda: dist.barrier())
    seconds = timed(lambda: dist.broadcast(x_prime, src=0), repeats, sync)
    if rank == 0:
        out.put(seconds)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tv.resnet50")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8, help="per student rank")
    parser.add_argument("--teachers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if args.device == "cuda" else (lambda: None)
    teacher = build_model(args.arch, args.classes, [0.5] * 3, [0.25] * 3).to(device).eval().requires_grad_(False)
    teacher_bytes = sum(t.numel() * t.element_size() for t in (*teacher.parameters(), *teacher.buffers()))
    x = torch.rand(args.batch, 3, args.resolution, args.resolution, device=device)
    w = torch.rand(args.batch, args.classes, device=device) * 2 - 1

    def ods_step():
        direction, y = ods_direction(teacher, x, w, 4.0)
        return ods_perturbation(x, direction, 1.0)

    ods_seconds = timed(ods_step, args.repeats, sync)
    with torch.no_grad():
        target_seconds = timed(lambda: teacher(x), args.repeats, sync)

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(
        broadcast_worker,
        args=(args.teachers, free_port(), tuple(x.shape), args.repeats, args.device, queue),
        nprocs=args.teachers,
        join=True,
    )
    broadcast_seconds = queue.get()

    x_bytes = x.numel() * x.element_size()
    local = ods_seconds + target_seconds
    beside = ods_seconds + broadcast_seconds + target_seconds
    mib = 2.0**20
    print(
        f"{args.teachers} × {args.arch} teachers ({args.classes} classes), batch {args.batch} at {args.resolution} px "
        f"per rank, {args.device} ({torch.get_num_threads()} threads), median of {args.repeats}"
    )
    print(f"  one teacher's weights and buffers  {teacher_bytes / mib:9.1f} MiB")
    print(f"  x′ per step                        {x_bytes / mib:9.1f} MiB")
    print(f"  ODS step (forward + input grad)    {ods_seconds * 1e3:9.1f} ms")
    print(f"  target forward (teacher m on x′)   {target_seconds * 1e3:9.1f} ms")
    print(f"  broadcast of x′ to {args.teachers} ranks         {broadcast_seconds * 1e3:9.1f} ms")
    print()
    print("| layout | teacher memory per rank | teacher time per step |")
    print("|---|---|---|")
    print(f"| every rank holds every teacher | {args.teachers * teacher_bytes / mib:.1f} MiB | {local * 1e3:.1f} ms |")
    print(f"| teacher m beside student m | {teacher_bytes / mib:.1f} MiB | {beside * 1e3:.1f} ms |")
    print(f"\nbeside/every: time {beside / local:.3f}×, memory {1 / args.teachers:.3f}×")


if __name__ == "__main__":
    main()
