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
