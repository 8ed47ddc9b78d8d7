"""What codistillation's copies cost in memory, checked before a local launch.

With ``exchange.mode: codistill`` every rank holds a copy of each of its K − 1 peers'
networks (``cohort.train.codistill``) beside its own network, its gradients, the optimiser's
state and the snapshot of its own weights at the last refresh. ``cohort train`` knows the
machine every rank runs on, so it adds up, per device (the host's memory for CPU ranks, each
GPU's for CUDA ranks, several members per GPU included), the float32 parameters the ranks
there hold, and refuses a layout whose parameters alone exceed the memory, in one line with
the figures. Activations come on top, so passing the check is necessary, not sufficient. A
cluster launch (``cohort submit``) cannot see its nodes, and is not checked.
"""

from __future__ import annotations

from collections import defaultdict

from cohort.config import CohortConfig, ConfigError
from cohort.dist.placement import place

OWN_COPIES = 4
"""Parameter-sized tensors a rank holds of its own network: weights, gradients, the optimiser's
momentum (SGD; AdamW holds one more, not counted) and codistillation's snapshot."""

GIB = 1 << 30


def parameter_bytes(config: CohortConfig, meta: dict) -> list[int]:
    """Each member's float32 parameter bytes, from its network built on PyTorch's meta device
    (shapes, no storage)."""
    import torch

    from cohort.models import member_network

    sizes: dict[tuple, int] = {}
    result = []
    for member, own in enumerate(config.members):
        key = (own.arch, own.blurpool, own.batch_ensemble)
        if key not in sizes:
            with torch.device("meta"):
                sizes[key] = 4 * sum(p.numel() for p in member_network(config, member, meta).parameters())
        result.append(sizes[key])
    return result


def held_bytes(config: CohortConfig, sizes: list[int], member: int) -> int:
    """The parameter bytes a rank of ``member`` holds: its own network ``OWN_COPIES`` times and
    every peer's once."""
    return OWN_COPIES * sizes[member] + sum(size for j, size in enumerate(sizes) if j != member)


def available_host_bytes() -> int | None:
    """The memory the kernel says new processes may take (``MemAvailable``), or None elsewhere than Linux."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_copies_fit(config: CohortConfig, meta: dict) -> None:
    """Refuse a codistillation whose ranks, all on this machine, hold more parameters than the
    memory of their device (the host's, or each GPU's); no-op for other cohorts."""
    if not config.codistills:
        return
    from cohort.dist.mesh import uses_cuda

    device_type = "cuda" if uses_cuda(config.train.device) else "cpu"
    sizes = parameter_bytes(config, meta)
    ranks = [(member, replica) for member in range(config.num_members) for replica in range(config.replicas)]
    need: dict[str, int] = defaultdict(int)
    if device_type == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        placement = place(config.train.members_per_gpu, config.num_members, config.replicas, len(ranks), gpus)
        for rank, (member, _) in enumerate(ranks):
            need[f"GPU {placement.gpu(rank)}"] += held_bytes(config, sizes, member)
        have = {f"GPU {i}": torch.cuda.get_device_properties(i).total_memory for i in range(gpus)}
    else:
        need["this machine"] = sum(held_bytes(config, sizes, member) for member, _ in ranks)
        have = {"this machine": available_host_bytes()}
    for device, needed in need.items():
        if have.get(device) is not None and needed > have[device]:
            peers = sum(sizes) - min(sizes)
            raise ConfigError(
                f"exchange.mode codistill: each rank holds copies of its {config.num_members - 1} peers' networks "
                f"(up to {peers / GIB:.2f} GiB of float32 parameters) beside {OWN_COPIES} of its own; the ranks on "
                f"{device} need {needed / GIB:.1f} GiB of parameters alone, more than its {have[device] / GIB:.1f} "
                f"GiB; train fewer or smaller members, spread them over more GPUs or nodes, or use "
                f"exchange.mode=logits"
            )
