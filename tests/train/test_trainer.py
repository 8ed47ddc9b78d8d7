"""The trainer builds each member as the config says: here ``data.normalize``, the input
scaling in front of every network, which its checkpoints carry to ``cohort eval`` and to a
student's teachers. One member trained for two steps in this process."""

from __future__ import annotations

import json

import torch

from cohort.run.checkpoint_files import latest_complete, load_model
from tests.conftest import tiny_config, train_here


def test_unit_input_scaling_reaches_the_network_and_its_checkpoint(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=1, loss={"mimicry": {"weight": 0}}, data={"normalize": "unit"})
    run = train_here(config, "train.epochs=1", "train.max_steps_per_epoch=2")
    meta = json.loads((digits_root / "meta.json").read_text())
    assert meta["std"][0] < 0.5  # the data's own statistics, which `dataset` would have used
    # Loaded with the data's statistics, as `cohort eval` builds it: the checkpoint's scaling wins.
    scaling = load_model(latest_complete(run), 0, "small_cnn", meta, "cpu", fix="-")[0]
    assert torch.equal(scaling.mean, torch.zeros(1, 3, 1, 1)) and torch.equal(scaling.std, torch.ones(1, 3, 1, 1))


def test_the_parts_cadences_evaluate_and_save_where_the_config_says(digits_root, tmp_path):
    """3 epochs of 3 steps: evaluated after every 2nd epoch and the last, saved after every 2nd
    epoch, the last and every 4th step (the evaluator's and the checkpointer's own cadences)."""
    config = tiny_config(tmp_path, digits_root, members=1, loss={"mimicry": {"weight": 0}})
    run = train_here(
        config,
        "train.epochs=3",
        "train.max_steps_per_epoch=3",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.checkpoint_every_steps=4",
        "train.keep_last=0",
    )
    evaluated = sorted({json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()})
    assert evaluated == [1, 2]
    saved = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert saved == ["step-000000004", "step-000000006", "step-000000008", "step-000000009"]
