"""``cohort eval``: evaluate a trained cohort's checkpoint, in one process or on the K×R layout.

Loads every member's part of a checkpoint (``last``: the newest complete one; ``best``:
the one chosen by ``train.select_by``; or a folder), predicts the validation split (to fit
temperatures) and the requested split, and writes ``RUN_DIR/eval/<checkpoint>/``:
``metrics.jsonl`` rows like training's and ``predictions/{val,<split>}.npz``.

One process holds every member (fine for CIFAR-sized members). ``--distributed`` starts
K×R ranks as training does (``python -m cohort.evaluate`` under torchrun or srun): each
loads only its member's part on its own device, predicts its replica's shard of a split,
and the shards and then the members are gathered to rank 0, which writes the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from cohort import checkpoint
from cohort.batch import device_formats, evaluation_logits, model_input
from cohort.data.datasets import DataError, check_data
from cohort.data.loader import MemberLoader
from cohort.mesh import CohortMesh, LaunchError, configure_threads, detect_launch, pick_device
from cohort.metrics import evaluate_cohort
from cohort.run_dir import RunDir, RunDirError


def checkpoint_folder(run: RunDir, which: str) -> Path:
    if which == "last":
        folder = checkpoint.latest_complete(run.path)
        if folder is None:
            raise RunDirError(f"{run.checkpoints} holds no complete checkpoint; train first (checkpoints need COMPLETE.json)")
        return folder
    folder = checkpoint.best_dir(run.path) if which == "best" else Path(which)
    if not (folder / checkpoint.MARKER).is_file():
        hint = "train with train.select_by=val_ensemble_nll (or similar)" if which == "best" else "pick a complete checkpoint"
        raise RunDirError(f"{folder / checkpoint.MARKER} is missing: not a complete checkpoint; {hint}")
    return folder


@torch.no_grad()
def predict(models: list[torch.nn.Module], beton: Path, seed: int, batch_size: int, flip_tta: bool = False,
            resolution=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[K, N, C]`` of every model on a ``.beton`` in file order, and its labels."""
    loader = MemberLoader(beton.parent, beton.stem, member=0, replica=0, replicas=1, seed=seed, policy="none",
                          batch_size=batch_size, num_workers=1, device=torch.device("cpu"), train=False,
                          resolution=resolution)
    logits, labels = [[] for _ in models], []
    for batch in loader.epoch(0):
        x = model_input(batch.images)
        for m, model in enumerate(models):
            logits[m].append(evaluation_logits(model, x, flip_tta))
        labels.append(batch.labels.clone())
    return torch.stack([torch.cat(chunks) for chunks in logits]).numpy(), torch.cat(labels).numpy()


def eval_betons(config, split: str, data: str | None) -> dict[str, Path]:
    """The ``.beton`` of each split to predict: val (for the temperatures) and ``split``."""
    root = Path(config.data.root)
    betons = {"val": root / "val.beton", split: Path(data) if data else root / f"{split}.beton"}
    for path in betons.values():
        if not path.is_file():
            raise RunDirError(f"{path} is missing; pass --data with a .beton written by `cohort data`")
    return betons


def run_eval(run_dir: str, which: str = "best", split: str = "test", data: str | None = None) -> Path:
    """Evaluate in this process, every member on the CPU."""
    run = RunDir(run_dir)
    config = run.load_config()
    folder = checkpoint_folder(run, which)
    meta = check_data(config.data.root)  # a truncated .beton is reported, not crashed on
    models = [checkpoint.load_model(folder, m, member.arch, meta, torch.device("cpu"), blurpool=member.blurpool,
                                    fix="pick another checkpoint with --checkpoint")
              for m, member in enumerate(config.members)]
    betons = eval_betons(config, split, data)
    logits, labels = {}, {}
    for name, path in betons.items():
        logits[name], labels[name] = predict(models, path, config.seed, config.data.eval_batch_size,
                                             config.train.flip_tta, config.data.resolution)
    return write_eval(run, config, folder, split, betons, logits, labels)


def write_eval(run: RunDir, config, folder: Path, split: str, betons: dict[str, Path],
               logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """Compute the metrics, write ``eval/<checkpoint>/`` and print the table."""
    results = evaluate_cohort(logits, labels)
    out = run.path / "eval" / folder.name
    epoch = checkpoint.weights_epoch(folder)
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.jsonl", "w") as f:
        for name, table in results.items():
            for member, row in table.items():
                f.write(json.dumps({"epoch": epoch, "split": name, "member": member, "checkpoint": str(folder), **row}) + "\n")
    for name in logits:
        np.savez(out / "predictions" / f"{name}.npz", logits=logits[name].astype(np.float32), labels=labels[name])
    (out / "source.yaml").write_text(yaml.safe_dump({"checkpoint": str(folder), "split": split, "data": str(betons[split])}))
    table = results[split]
    print(f"{'':<10} {'acc':>7} {'nll':>7} {'ece':>7} {'c_nll':>7} {'c_ece':>7}")
    for member in table:
        row = table[member]
        name = config.members[member].name if member != "ensemble" else "ensemble"
        print(f"{name:<10} {row['acc']:>7.4f} {row['nll']:>7.4f} {row['ece']:>7.4f} {row['c_nll']:>7.4f} {row['c_ece']:>7.4f}")
    print(f"\nwrote {out}")
    return out


# --- on the K×R layout ---------------------------------------------------------------------

@torch.no_grad()
def cohort_logits(net: torch.nn.Module, loader: MemberLoader, mesh, flip_tta: bool, autocast=nullcontext(),
                  channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The cohort's logits ``[K, N, C]`` on a split, in file order, and the labels ``[N]``; a
    collective. Each rank predicts its replica's shard with its member's ``net`` (in eval
    mode); the replicas' shards are gathered, then the members' logits (over the exchange
    group, on the device its backend reads)."""
    logits, labels = [], []
    for batch in loader.epoch(0):
        with autocast:
            logits.append(evaluation_logits(net, model_input(batch.images, channels_last), flip_tta))
        labels.append(batch.labels.clone())
    local, local_labels = torch.cat(logits), torch.cat(labels)
    if mesh.replicas > 1:
        member_logits = torch.from_numpy(loader.unshard(all_gather(local, mesh.replica_group, mesh.replicas).cpu().numpy()))
        all_labels = loader.unshard(all_gather(local_labels, mesh.replica_group, mesh.replicas).cpu().numpy())
    else:
        member_logits, all_labels = local.cpu()[: loader.num_samples], local_labels.cpu().numpy()[: loader.num_samples]
    gathered = all_gather(member_logits.to(mesh.member_device), mesh.member_group, mesh.members)
    return gathered.cpu().numpy(), all_labels


def all_gather(tensor: torch.Tensor, group, size: int) -> torch.Tensor:
    """``[size, ...]``: every rank's ``tensor`` of the group, stacked in group order."""
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.stack(parts)


def run_eval_rank(run_dir: str, which: str, split: str, data: str | None, replicas: int | None, launch) -> None:
    """This rank's part of a distributed evaluation; rank 0 writes the results."""
    run = RunDir(run_dir)
    config = run.load_config()
    replicas = replicas or config.replicas
    folder = checkpoint_folder(run, which)
    meta = check_data(config.data.root)
    betons = eval_betons(config, split, data)
    configure_threads(config, launch.local_world_size, launch.local_rank)
    members = config.num_members
    device, placement = pick_device(config.train.device, launch, config.train.members_per_gpu, members, replicas)
    mesh = CohortMesh(members, replicas, launch, device, config.train.dist_timeout_s, placement)
    try:
        member = config.members[mesh.member]
        net = checkpoint.load_model(folder, mesh.member, member.arch, meta, device, blurpool=member.blurpool,
                                    fix="pick another checkpoint with --checkpoint")
        autocast, channels_last = device_formats(config.train.bf16, config.train.channels_last, device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        logits, labels = {}, {}
        for name, path in betons.items():
            loader = MemberLoader(path.parent, path.stem, member=mesh.member, replica=mesh.replica, replicas=replicas,
                                  seed=config.seed, policy="none", batch_size=config.data.eval_batch_size,
                                  num_workers=config.data.num_workers, device=device, train=False,
                                  resolution=config.data.resolution, os_cache=config.data.os_cache)
            logits[name], labels[name] = cohort_logits(net, loader, mesh, config.train.flip_tta, autocast, channels_last)
        if mesh.is_main:
            write_eval(run, config, folder, split, betons, logits, labels)
        mesh.barrier()
    finally:
        mesh.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m cohort.evaluate RUN_DIR [--checkpoint C] [--split S] [--data D] [--replicas R]``,
    one process per rank (torchrun or srun); ``cohort eval --distributed`` starts it."""
    parser = argparse.ArgumentParser(prog="python -m cohort.evaluate")
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--data")
    parser.add_argument("--replicas", type=int)
    args = parser.parse_args(argv)
    launch = detect_launch()
    try:
        run_eval_rank(args.run_dir, args.checkpoint, args.split, args.data, args.replicas, launch)
    except (RunDirError, DataError, LaunchError) as error:
        # Every rank meets these alike: rank 0 says it once; the others wait so that
        # torchrun does not stop rank 0 before it has.
        if launch.rank == 0:
            print(f"cohort: error: {error}", file=sys.stderr, flush=True)
        else:
            time.sleep(2.0)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
