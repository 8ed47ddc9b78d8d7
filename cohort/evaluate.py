"""``cohort eval``: evaluate a trained cohort's checkpoint on one process.

Loads every member's part of a checkpoint (``last``: the newest complete one; ``best``:
the one chosen by ``train.select_by``; or a folder), predicts the validation split (to fit
temperatures) and the requested split, and writes ``RUN_DIR/eval/<checkpoint>/``:
``metrics.jsonl`` rows like training's and ``predictions/{val,<split>}.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from cohort import checkpoint
from cohort.batch import evaluation_logits, model_input
from cohort.data.datasets import check_data
from cohort.data.loader import MemberLoader
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


def run_eval(run_dir: str, which: str = "best", split: str = "test", data: str | None = None) -> Path:
    run = RunDir(run_dir)
    config = run.load_config()
    folder = checkpoint_folder(run, which)
    meta = check_data(config.data.root)  # a truncated .beton is reported, not crashed on
    models = [checkpoint.load_model(folder, m, member.arch, meta, torch.device("cpu"), blurpool=member.blurpool,
                                    fix="pick another checkpoint with --checkpoint")
              for m, member in enumerate(config.members)]
    root = Path(config.data.root)
    betons = {"val": root / "val.beton", split: Path(data) if data else root / f"{split}.beton"}
    for path in betons.values():
        if not path.is_file():
            raise RunDirError(f"{path} is missing; pass --data with a .beton written by `cohort data`")
    logits, labels = {}, {}
    for name, path in betons.items():
        logits[name], labels[name] = predict(models, path, config.seed, config.data.eval_batch_size,
                                             config.train.flip_tta, config.data.resolution)
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
