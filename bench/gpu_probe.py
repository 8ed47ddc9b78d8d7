"""A cohort's shape with torch alone, for ``bench/gpu_check.py`` where ``cohort train`` cannot
run (no FFCV): K rank processes on one GPU, each training its own network on synthetic
images already on the GPU, every step all-gathering its detached logits over gloo through
host memory (as cohort's exchange does for members packed on one GPU) and minimising
cross-entropy plus KL to the peers' mean; each rank also joins an NCCL group of its own
(cohort's replica group of a packed member, R = 1) and all-reduces once over it, so NCCL
is initialised. SIGUSR1 or SIGTERM makes a rank finish its step, write what it saw, exit 0.

    python bench/gpu_probe.py --ranks K --steps N --out DIR [--arch resnet18] [--batch 256] [--device cuda]

Rank r writes ``DIR/rank{r}.json``: images/s over the timed steps, the CUDA memory it
allocated on each visible device (only its own device may be non-zero), its peak host
memory, and the step a stop signal reached it at.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def launch(ranks: int, args: list[str]) -> list[subprocess.Popen]:
    """Start ``ranks`` rank processes as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, a free port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    children = []
    for rank in range(ranks):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(ranks),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks)),
        }
        children.append(subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=REPO))
    return children


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout-s", type=float, default=60, help="collectives fail after this long")
    args = parser.parse_args()
    if "RANK" not in os.environ:  # the launcher: start the ranks, wait for them
        args.out.mkdir(parents=True, exist_ok=True)
        children = launch(args.ranks, sys.argv[1:])
        return max(child.wait() for child in children)
    return run_rank(args)


def run_rank(args) -> int:
    import datetime

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from cohort.models import build_model

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    stop = {"signal": 0, "step": None}

    def request(signum, frame):
        stop["signal"] = stop["signal"] or signum

    for signum in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(signum, request)
    timeout = datetime.timedelta(seconds=args.timeout_s)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(0)  # one GPU: every rank packed on it
        groups = [dist.new_group([r], backend="nccl", timeout=timeout) for r in range(world)]
        dist.all_reduce(torch.ones(1, device=device), group=groups[rank])  # NCCL is up
    torch.manual_seed(rank)
    net = build_model(args.arch, 10, [0.5] * 3, [0.25] * 3).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (args.batch,)).to(device)

    def step() -> None:
        logits = net(images.float().div_(255))
        mine = logits.detach().float().cpu()
        everyone = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(everyone, mine)  # the exchange, over gloo through host memory
        loss = F.cross_entropy(logits, labels)
        if world > 1:
            peers = torch.stack([p for r, p in enumerate(everyone) if r != rank]).softmax(-1).mean(0).to(device)
            loss = loss + F.kl_div(logits.log_softmax(-1), peers, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    (args.out / f"rank{rank}.training").touch()  # for a signal sent once training runs
    start, done = time.perf_counter(), 0
    while done < args.steps and not stop["signal"]:
        step()
        done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if stop["signal"]:
        stop["step"] = done
    result = {
        "rank": rank,
        "images_per_s": round(done * args.batch / seconds, 1) if done else 0.0,
        "steps": done,
        "cuda_mib_per_device": [round(torch.cuda.memory_allocated(i) / 2**20) for i in range(torch.cuda.device_count())]
        if device.type == "cuda"
        else [],
        "peak_host_mib": round(peak_rss_kib() / 1024),
        "stop_signal": stop["signal"],
        "stopped_at_step": stop["step"],
    }
    (args.out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()
    return 0


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
