"""``cohort eval``: evaluate a trained cohort's checkpoint, in one process or on the K×R layout.

Loads every member's part of a checkpoint (``last``: the newest complete one; ``best``:
the one chosen by ``train.select_by``; or a folder), predicts the validation split (to fit
temperatures) and the requested split, and writes ``RUN_DIR/eval/<checkpoint>/``:
``metrics.jsonl`` rows like training's and ``predictions/{val,<split>}.npz``.

One process holds every member (fine for CIFAR-sized members): ``run_eval``. ``--distributed``
starts K×R ranks as training does (``python -m cohort.evaluate.worker`` under torchrun or srun):
each loads only its member's part on its own device, predicts its replica's shard of a split,
and the shards and then the members are gathered to rank 0, which writes the same files
(``write_eval``). What is checked before either starts is ``cohort.preflight.plan_eval``.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml

from cohort.evaluate.predict import predict
from cohort.preflight import EvalPlan
from cohort.run import checkpoint_files
from cohort.run.directory import RunDir
from cohort.run.files import replacing, writing
from cohort.run.predictions import write_predictions
from cohort.run.tracking import attach, each, tracked_metrics

RERUN = "rerun `cohort eval`"
"""What to do once a failed write's cause (a full disk) is fixed."""


def run_eval(plan: EvalPlan):
    """Evaluate ``plan`` (``cohort.preflight.plan_eval``) in this process, every member on the
    CPU; returns the folder written."""
    models = [
        checkpoint_files.load_model(
            plan.folder,
            m,
            member.arch,
            plan.meta,
            torch.device("cpu"),
            blurpool=member.blurpool,
            batch_ensemble=member.batch_ensemble,
            fix="pick another checkpoint with --checkpoint",
        )
        for m, member in enumerate(plan.config.members)
    ]
    logits, labels = {}, {}
    for name, path in plan.betons.items():
        logits[name], labels[name] = predict(models, path, plan.config)
    return write_eval(plan, logits, labels)


def write_eval(plan: EvalPlan, logits: dict[str, np.ndarray], labels: dict[str, np.ndarray]):
    """Compute the metrics, write ``eval/<checkpoint>/`` and print the table; returns the folder."""
    from cohort.evaluate.metrics import Binning, evaluate_cohort

    binning = Binning.of(plan.config)
    results = evaluate_cohort(logits, labels, binning)
    out = plan.run.evaluation(plan.folder.name)
    epoch = checkpoint_files.weights_epoch(plan.folder)
    # Each file whole or not at all (``replacing``); a full disk is one line naming it.
    with writing(out.path, then=RERUN):
        out.path.mkdir(parents=True, exist_ok=True)
    with replacing(out.metrics_file, then=RERUN) as f:
        for name, table in results.items():
            for member, row in table.items():
                f.write(
                    json.dumps({"epoch": epoch, "split": name, "member": member, "checkpoint": str(plan.folder), **row})
                    + "\n"
                )
    for name in logits:
        write_predictions(out.prediction_file(name), logits[name], labels[name], then=RERUN)
    with replacing(out.source_file, then=RERUN) as f:
        f.write(
            yaml.safe_dump({"checkpoint": str(plan.folder), "split": plan.split, "data": str(plan.betons[plan.split])})
        )
    table = results[plan.split]
    names = plan.config.member_names
    print(f"{'':<10} {'acc':>7} {'nll':>7} {'ece':>7} {'mce':>7} {'c_nll':>7} {'c_ece':>7}")
    reported = plan.config.reported_rows
    for member in [*reported, *(m for m in table if m not in reported)]:
        row = table[member]
        name = names[member] + (" *" if member in reported else "") if member != "ensemble" else "ensemble"
        print(
            f"{name:<10} {row['acc']:>7.4f} {row['nll']:>7.4f} {row['ece']:>7.4f} {row['mce']:>7.4f} "
            f"{row['c_nll']:>7.4f} {row['c_ece']:>7.4f}"
        )
    print(("* reported (reported_members); " if reported else "") + f"ECE and MCE: {binning.describe()}")
    print(f"\nwrote {out.path}")
    track_eval(plan, out, results)
    return out.path


def track_eval(plan: EvalPlan, out: RunDir, results: dict[str, dict]) -> None:
    """Add the evaluation to the run's tracked runs (``tracking.json``), if it has any: its
    metrics as ``eval/<checkpoint>/<split>/<metric>/<member>`` at the checkpoint's step (W&B: in
    the run's summary, since its history takes no step below the last), its files as artefacts."""
    trackers = attach(plan.run)
    if not trackers:
        return
    step = int(checkpoint_files.read_marker(plan.folder).get("step", 0))
    prefix = f"eval/{plan.folder.name}"
    rows = [
        {"epoch": 0, "step": step, "split": split, "member": member, **row}
        for split, table in results.items()
        for member, row in table.items()
    ]
    found = tracked_metrics(rows, plan.config.member_names, [])[step]
    metrics = {f"{prefix}/{key}": value for key, value in found.items() if key != "epoch"}
    metrics[f"{prefix}/step"] = float(step)
    trackers = each(trackers, lambda tracker: tracker.summary(metrics, step))
    for path in (out.metrics_file, out.source_file):
        trackers = each(trackers, lambda tracker, path=path: tracker.artifact(path, prefix))
    each(trackers, lambda tracker: tracker.close(None))
