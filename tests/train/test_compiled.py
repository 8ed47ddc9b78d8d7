"""``train.compile``: a compiled member trains as the plain one does, and its checkpoints are
the plain module's (``cohort.train.compiled``).

The trainer runs in this process, as a one-rank cohort (a "single" launch: a gloo group of
one), on the real digits data: the compiled forward and backward are inductor's CPU code,
which needs a C compiler.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cohort.models import build_model
from cohort.run.checkpoint_files import latest_complete, load_model, load_part
from cohort.train.compiled import compiled
from tests.conftest import tiny_config, train_here

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="torch.compile's inductor backend builds C++ on the CPU and no C compiler is installed",
)


def step_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "trace" / "member0-replica0.jsonl").read_text().splitlines()]
    return [row["ce"] for row in rows if "step" in row]


STEPS = ("train.epochs=1", "train.max_steps_per_epoch=3", "train.trace=true", "train.checkpoint_every_steps=1")


@pytest.fixture(scope="module")
def plain_and_compiled(digits_root, tmp_path_factory):
    """The same one-member cohort trained for 3 steps plain and compiled (traced, a checkpoint
    after every step): {name: (config, overrides, run directory)}."""
    runs = {}
    for name, flag in (("plain", "false"), ("compiled", "true")):
        tmp = tmp_path_factory.mktemp(name)
        config = tiny_config(tmp, digits_root, members=1, loss={"mimicry": {"weight": 0}}, train={"keep_last": 0})
        overrides = (*STEPS, f"train.compile={flag}")
        runs[name] = (config, overrides, train_here(config, *overrides))
    return runs


def final_digest(run_dir: Path) -> str:
    rows = [json.loads(line) for line in (run_dir / "trace" / "member0-replica0.jsonl").read_text().splitlines()]
    return next(row["param_digest"] for row in rows if row.get("final"))


def test_compiled_returns_the_module_itself_when_off_and_an_optimized_module_when_on():
    net = torch.nn.Linear(2, 2)
    assert compiled(net, False) is net
    assert compiled(net, True)._orig_mod is net


def test_a_compiled_member_trains_to_the_same_losses_as_the_plain_one(plain_and_compiled):
    plain, compiled_ = (step_losses(run) for _, _, run in plain_and_compiled.values())
    assert len(plain) == len(compiled_) == 3
    # Step 0 compares the forward; steps 1 and 2 come after updates from the compiled backward.
    assert compiled_ == pytest.approx(plain, rel=1e-4, abs=1e-5)


def test_a_compiled_members_checkpoint_holds_the_plain_keys_and_loads_uncompiled(plain_and_compiled, digits_root):
    _, _, run = plain_and_compiled["compiled"]
    folder = latest_complete(run)
    part = load_part(folder, 0, "cpu")
    meta = json.loads((digits_root / "meta.json").read_text())
    plain = build_model("small_cnn", meta["num_classes"], meta["mean"], meta["std"])
    assert set(part["model"]) == set(plain.state_dict())  # no ``_orig_mod.`` prefix
    # What ``cohort eval`` and a student's teachers load: the plain network, strictly.
    loaded = load_model(folder, 0, "small_cnn", meta, "cpu", fix="-")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in part["model"].items())


def test_a_compiled_member_resumes_to_the_same_weights(plain_and_compiled, tmp_path):
    config, overrides, run = plain_and_compiled["compiled"]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for later in sorted((copy / "checkpoints").glob("step-*"))[1:]:
        shutil.rmtree(later)  # as if it had stopped after step 1
    trace = copy / "trace" / "member0-replica0.jsonl"
    trace.write_text(trace.read_text().splitlines(keepends=True)[0])
    resumed = train_here(config, *overrides, f"run_dir={copy}", "resume=auto")
    assert step_losses(resumed) == step_losses(run)
    assert final_digest(resumed) == final_digest(run)
