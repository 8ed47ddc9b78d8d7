"""Real cohorts: torchrun processes on gloo, reading real FFCV files. Each run takes ~30 s,
most of it FFCV's first-use JIT compilation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from cohort.config import load_config
from cohort.data.loader import MemberLoader
from cohort.models import build_model
from cohort.run.checkpoint_files import MARKER
from cohort.run.directory import RunDir
from cohort.train.optim import build_optimizer, lr_factor, set_lr
from cohort.train.trainer import member_init_seed
from tests.conftest import REPO, run_cli, run_torchrun, tiny_config

pytestmark = pytest.mark.multiprocess


def read_trace(run: Path, member: int, replica: int = 0) -> tuple[list[dict], dict]:
    rows = [
        json.loads(line) for line in (run / "trace" / f"member{member}-replica{replica}.jsonl").read_text().splitlines()
    ]
    return [r for r in rows if "step" in r], next(r for r in rows if r.get("final"))


def resume_a_copy(run: Path, config: Path, tmp_path: Path):
    """Copy a finished 12-step run, drop its final checkpoint (step 12) and predictions, and
    train the copy again with ``resume=auto``: (the copy, the finished resume)."""
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    (moved / "checkpoints" / "step-000000012" / MARKER).unlink()
    shutil.rmtree(moved / "predictions")
    resumed = run_cli("train", str(config), f"run_dir={moved}", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return moved, resumed


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("cohort: error:")]


def test_three_members_see_the_same_labels_at_every_step(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=3, train={"trace": True})
    result = run_cli("train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    traces = [read_trace(run, m)[0] for m in range(3)]
    assert [len(t) for t in traces] == [12, 12, 12]
    for step in range(12):
        assert traces[0][step]["labels"] == traces[1][step]["labels"] == traces[2][step]["labels"]
        assert len(traces[0][step]["labels"]) == 16
    assert traces[0][0]["labels"] != traces[0][1]["labels"]
    # The run directory's contract.
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {(r["epoch"], r["split"], r["member"]) for r in rows} == {
        (e, s, m) for e in (0, 1) for s in ("val", "test") for m in (0, 1, 2, "ensemble")
    }
    assert all({"acc", "nll"} <= set(r) for r in rows)
    assert all({"ce", "mimicry", "loss"} <= set(r) for r in rows if r["member"] != "ensemble")
    for split, n in (("val", 180), ("test", 359)):
        saved = np.load(run / "predictions" / f"{split}.npz")
        assert saved["logits"].shape == (3, n, 10) and saved["logits"].dtype == np.float32
        assert saved["labels"].shape == (n,) and saved["labels"].dtype == np.int64
    assert (run / "checkpoints" / "step-000000012" / MARKER).is_file()  # 2 epochs × 6 steps
    assert yaml.safe_load((run / "config.yaml").read_text())["members"][2]["name"] == "m2"
    assert "ensemble" in result.stdout and f"run directory: {run}" in result.stdout


def reference_losses(config_path: Path) -> list[list[dict]]:
    """The same K = 2 DML training, computed in this one process without any exchange."""
    config = load_config(config_path)
    meta = json.loads((Path(config.data.root) / "meta.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models, optimizers, loaders = [], [], []
        for m in range(2):
            torch.manual_seed(member_init_seed(config.seed, m))
            models.append(build_model(config.members[m].arch, 10, meta["mean"], meta["std"]))
            optimizers.append(build_optimizer(models[m].parameters(), config.member_optim(m)))
            loaders.append(
                MemberLoader(
                    config.data.root,
                    "train",
                    member=m,
                    replica=0,
                    replicas=1,
                    seed=config.seed,
                    policy=config.members[m].policy,
                    batch_size=config.data.batch_size,
                    num_workers=1,
                    device=torch.device("cpu"),
                    train=True,
                    view_stream=config.view_stream(m),
                )
            )
        losses: list[list[dict]] = [[], []]
        steps = config.train.max_steps_per_epoch
        for epoch in range(config.train.epochs):
            for step, batches in enumerate(zip(loaders[0].epoch(epoch), loaders[1].epoch(epoch))):
                if step == steps:
                    break
                labels = batches[0].labels
                assert torch.equal(labels, batches[1].labels)
                logits = [models[m](batches[m].images.float() / 255) for m in range(2)]
                for m in range(2):
                    peer = logits[1 - m].detach()
                    ce = F.cross_entropy(logits[m], labels)
                    kl = F.kl_div(
                        F.log_softmax(logits[m], 1), F.log_softmax(peer, 1), log_target=True, reduction="batchmean"
                    )
                    loss = ce + config.loss.mimicry.weight * kl
                    set_lr(
                        optimizers[m],
                        config.optim.lr * lr_factor(config.schedule, epoch + step / steps, config.train.epochs),
                    )
                    optimizers[m].zero_grad()
                    loss.backward()
                    optimizers[m].step()
                    losses[m].append({"ce": ce.item(), "mimicry": kl.item(), "loss": loss.item()})
        return losses
    finally:
        torch.set_num_threads(threads)


def test_dml_losses_equal_a_single_process_reference(dml_pair):
    config, run, _ = dml_pair
    expected = reference_losses(config)
    for member in range(2):
        trace = read_trace(run, member)[0]
        assert len(trace) == len(expected[member]) == 12
        for step, (got, want) in enumerate(zip(trace, expected[member])):
            for term in ("ce", "mimicry", "loss"):
                assert got[term] == pytest.approx(want[term], abs=1e-5), (member, step, term)
    assert all(row["mimicry"] > 1e-4 for row in expected[0])  # the peer term really contributes


def test_replicas_of_a_member_end_with_identical_parameters(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=2, replicas=2, train={"trace": True, "epochs": 1})
    result = run_torchrun(4, str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    digests = {(m, r): read_trace(run, m, r)[1]["param_digest"] for m in range(2) for r in range(2)}
    assert digests[0, 0] == digests[0, 1]
    assert digests[1, 0] == digests[1, 1]
    assert digests[0, 0] != digests[1, 0]
    # Replicas read disjoint halves of the same batch indices of the cohort.
    labels = {(m, r): [row["labels"] for row in read_trace(run, m, r)[0]] for m in range(2) for r in range(2)}
    assert labels[0, 0] == labels[1, 0] and labels[0, 1] == labels[1, 1] and labels[0, 0] != labels[0, 1]
    saved = np.load(run / "predictions" / "test.npz")
    assert saved["logits"].shape == (2, 359, 10)


def test_runs_are_bit_identical_across_repeats_and_loader_worker_counts(dml_pair, digits_root, tmp_path):
    config, run, _ = dml_pair
    reference = np.load(run / "predictions" / "test.npz")["logits"]
    for workers in (1, 2):
        again = run_torchrun(2, str(config), f"run_dir={tmp_path / f'w{workers}'}", f"data.num_workers={workers}")
        assert again.returncode == 0, again.stderr[-3000:]
        logits = np.load(tmp_path / f"w{workers}" / "predictions" / "test.npz")["logits"]
        assert np.array_equal(logits, reference), f"num_workers={workers} changed the test logits"


def test_resume_auto_continues_from_the_latest_complete_checkpoint(dml_pair, tmp_path):
    config, run, _ = dml_pair
    reference = np.load(run / "predictions" / "test.npz")["logits"]
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    # A crash while saving after epoch 1: its folder exists but has no marker; predictions are gone.
    (moved / "checkpoints" / "step-000000012" / MARKER).unlink()
    shutil.rmtree(moved / "predictions")
    result = run_torchrun(2, str(config), f"run_dir={moved}", "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout and "at epoch 1 batch 0 (step 6) from step-000000006" in result.stdout
    assert np.array_equal(np.load(moved / "predictions" / "test.npz")["logits"], reference)
    rows = [json.loads(line) for line in (moved / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["epoch"] for r in rows if r["member"] == 0 and r["split"] == "val") == [0, 1]


def test_an_existing_run_is_not_overwritten_without_resume(dml_pair, cli_here):
    config, run, _ = dml_pair
    before = (run / "metrics.jsonl").read_text()
    result = cli_here("train", str(config))
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"cohort: error: {run} already holds a run; pass resume=auto to continue it, or run_dir=<a new folder>"
    ]
    assert (run / "metrics.jsonl").read_text() == before


def test_wrong_process_count_is_one_line_from_every_rank(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=2)
    result = run_torchrun(3, str(config), timeout=120)
    assert result.returncode != 0
    assert error_lines(result.stderr) == [
        "cohort: error: 3 processes were started but the config needs K×R = 2×1 = 2; "
        "start 2 (e.g. torchrun --nproc-per-node 2)"
    ]
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_the_cohort_naming_member_and_step(digits_root, tmp_path):
    config = tiny_config(tmp_path, digits_root, members=2, optim={"lr": 1e30})
    result = run_cli("train", str(config), timeout=300)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "non-finite" in lines[0] and "at step 1" in lines[0], result.stderr[-2000:]


def test_labels_beyond_the_class_count_are_reported(digits_root, tmp_path, cli_here):
    data = tmp_path / "data"
    shutil.copytree(digits_root, data)
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "num_classes": 5}))
    config = tiny_config(tmp_path, data, members=2)
    result = cli_here("train", str(config))
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) >= 1 and "is outside 0..4" in lines[0] and "train.beton" in lines[0], result.stderr[-2000:]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "data.root=/nonexistent/cifar",
            "cohort: error: /nonexistent/cifar/meta.json is missing; write the data with `cohort data",
        ),
        ("members.0.arch=resnet33", "cohort: error: members.0.arch 'resnet33' is unknown; valid: small_cnn"),
        (
            "members.1.policy=sharpen",
            "cohort: error: members.1.policy 'sharpen' is not valid; choose one of: none, crop",
        ),
        ("members.0.strength=3", "cohort: error: members.0.strength must be in [0.0, 2.0]"),
        ("loss.diversity.weight=-0.5", "cohort: error: loss.diversity: weight and margin must be >= 0"),
    ],
)
def test_bad_input_fails_before_any_process_starts(digits_root, tmp_path, override, message, cli_here):
    config = tiny_config(tmp_path, digits_root, members=2, data={"dataset": "cifar10"})
    result = cli_here("train", str(config), override)
    assert result.returncode == 2
    assert len(error_lines(result.stderr)) == 1 and error_lines(result.stderr)[0].startswith(message)
    assert not (tmp_path / "run").exists()


def test_cskd_inside_a_dml_cohort_gives_every_member_the_same_anchors_and_partners(digits_root, tmp_path):
    config = tiny_config(
        tmp_path,
        digits_root,
        members=2,
        train={"trace": True, "epochs": 1},
        loss={"mimicry": {"weight": 1.0}, "cskd": {"weight": 1.0}},
    )
    result = run_cli("train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    traces = [read_trace(run, m)[0] for m in range(2)]
    assert [len(t) for t in traces] == [6, 6]
    for a, b in zip(*traces):
        assert a["indices"] == b["indices"] and len(a["indices"]) == 32  # 16 anchors, then their 16 partners
        assert a["labels"][16:] == a["labels"][:16]
        assert a["cskd"] > 0 and a["mimicry"] > 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"ce", "cskd", "mimicry", "loss"} <= set(r) for r in rows if r["member"] != "ensemble")


def test_semi_supervised_dml_hides_the_same_labels_from_every_member(digits_root, tmp_path):
    from cohort.data.labelled import labelled_set

    config = tiny_config(
        tmp_path, digits_root, members=2, train={"trace": True, "epochs": 1}, data={"labelled_fraction": 0.1}
    )
    result = run_cli("train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    labelled = set(labelled_set(load_config(config).data).tolist())
    traces = [read_trace(tmp_path / "run", m)[0] for m in range(2)]
    hidden = 0
    for a, b in zip(*traces):
        assert a["indices"] == b["indices"] and a["labels"] == b["labels"]
        for index, label in zip(a["indices"], a["labels"]):
            assert (label >= 0) == (index in labelled)
            hidden += label < 0
    assert hidden > 0.8 * 6 * 16  # mimicry reads the unlabelled 90 %; CE sees only the labelled


def test_students_distil_frozen_teachers_with_one_draw_per_step_and_resume_exactly(dml_pair, digits_root, tmp_path):
    """ConfODS distillation from the dml_pair run, with mimicry between the students: both
    students draw the same teacher, w and x′ at every step, the teachers end bit-identical to
    their checkpoint, and a run resumed from its epoch-1 checkpoint ends bit-identical."""
    from cohort.evaluate.report import Run, summary_table
    from cohort.run.checkpoint_files import best_dir, load_part
    from cohort.train.teachers import chosen_teacher
    from cohort.train.trace import parameter_digest

    _, teacher_run, _ = dml_pair
    config = tiny_config(
        tmp_path,
        digits_root,
        members=2,
        views="shared",
        loss={"ce": {"weight": 0.1}, "mimicry": {"weight": 0.5}, "distill": {"weight": 0.9}},
        teacher={"run_dir": str(teacher_run), "perturbation": "confods"},
        train={"trace": True, "checkpoint_every": 1},
    )
    result = run_cli("train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    (a, final_a), (b, final_b) = (read_trace(run, m) for m in range(2))
    assert len(a) == len(b) == 12
    for step, (x, y) in enumerate(zip(a, b)):
        assert x["teacher"] == y["teacher"] == chosen_teacher(0, step, 2)
        assert x["w"] == y["w"] and x["x_prime"] == y["x_prime"] and x["indices"] == y["indices"]
        assert x["distill"] > 0 and x["mimicry"] > 0
    assert {x["teacher"] for x in a} == {0, 1}
    # Teachers frozen: each rank's copies equal the checkpoint they were loaded from (weights and BN statistics).
    for j in range(2):
        net = build_model("small_cnn", 10, [0.5] * 3, [0.25] * 3)
        net.load_state_dict(load_part(best_dir(teacher_run), j, torch.device("cpu"))["model"])
        assert final_a["teacher_digests"][str(j)] == final_b["teacher_digests"][str(j)] == parameter_digest(net)
    assert json.loads(RunDir(run).teacher_plan_file.read_text())["checkpoint"] == str(best_dir(teacher_run))
    assert "| teachers of test (run) |" in summary_table([Run.load(run)])

    moved, resumed = resume_a_copy(run, config, tmp_path)
    assert "at epoch 1 batch 0 (step 6)" in resumed.stdout
    assert read_trace(moved, 0)[1]["param_digest"] == final_a["param_digest"]
    assert np.array_equal(
        np.load(moved / "predictions" / "test.npz")["logits"], np.load(run / "predictions" / "test.npz")["logits"]
    )


def test_batch_ensembles_learn_by_dml_and_each_internal_member_from_its_teacher_and_resume_exactly(
    digits_root, tmp_path
):
    """K = 2 ranks × n = 2 internal members (BE-2 small CNNs): mimicry between the ranks over an
    exchange of 4 networks, ODS distillation one_to_one from 4 teachers (internal member j of
    rank m from teacher 2m + j; the loss itself: tests/models/test_batch_ensemble.py), 4 networks
    in every prediction and metric, and a run resumed from a mid-epoch checkpoint ends bit-identical."""
    (tmp_path / "teachers").mkdir()
    (tmp_path / "students").mkdir()
    teachers = tiny_config(
        tmp_path / "teachers",
        digits_root,
        members=[{"arch": "small_cnn16", "policy": "crop"}] * 4,
        loss={"mimicry": {"weight": 0.0}},
        train={"epochs": 1, "max_steps_per_epoch": 2},
    )
    result = run_torchrun(4, str(teachers))
    assert result.returncode == 0, result.stderr[-3000:]
    config = tiny_config(
        tmp_path / "students",
        digits_root,
        members=[{"arch": "small_cnn16", "policy": "crop", "batch_ensemble": 2}] * 2,
        loss={"ce": {"weight": 0.1}, "mimicry": {"weight": 0.5}, "distill": {"weight": 0.9}},
        teacher={"run_dir": str(tmp_path / "teachers" / "run"), "mapping": "one_to_one", "perturbation": "ods"},
        train={"trace": True, "checkpoint_every_steps": 9},
    )
    result = run_cli("train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "students" / "run"
    test = np.load(run / "predictions" / "test.npz")["logits"]
    assert test.shape[0] == 4 and not np.array_equal(test[0], test[1])  # the internal members differ
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["member"] for r in rows} == {0, 1, 2, 3, "ensemble"}
    (a, final_a), (b, _) = (read_trace(run, m) for m in range(2))
    assert len(a) == len(b) == 12
    for x, y in zip(a, b):  # one teacher, one w and one x′ per step for every internal member
        assert x["teacher"] == y["teacher"] and x["x_prime"] == y["x_prime"]
        assert x["mimicry"] > 0 and x["distill"] > 0
    assert json.loads(RunDir(run).teacher_plan_file.read_text())["mapping"] == "one_to_one"
    assert all(f"\nm{m}.{j} " in result.stdout for m in range(2) for j in range(2))  # the final table's rows

    moved, resumed = resume_a_copy(run, config, tmp_path)
    assert "at epoch 1 batch 3 (step 9)" in resumed.stdout
    assert read_trace(moved, 0)[1]["param_digest"] == final_a["param_digest"]
    assert np.array_equal(np.load(moved / "predictions" / "test.npz")["logits"], test)


def test_the_imagenet_recipe_trains_k2_r2_on_a_tiny_imagefolder_and_resumes_bit_identically(tmp_path):
    """configs/imagenet_dml_resnet18.yaml at toy scale on CPU: generated JPEGs written by
    `cohort data imagefolder`, K = 2 members × R = 2 replicas, seeded random-resized crops
    with progressive resizing (32 px, then 64 px), flip, cyclic LR, label smoothing, no weight
    decay on BatchNorm, BlurPool, flip TTA and the page-local order; then a crash after epoch 1's checkpoint,
    resumed: the final weights and test logits are bit-identical to the uninterrupted run's."""
    from tests.data.test_datasets import write_folders

    write_folders(tmp_path / "jpegs", {"train": {"a": 20, "b": 20}, "val": {"a": 4, "b": 4}})
    data = tmp_path / "data"
    written = run_cli(
        "data",
        "imagefolder",
        "--out",
        str(data),
        "--train-dir",
        str(tmp_path / "jpegs" / "train"),
        "--test-dir",
        str(tmp_path / "jpegs" / "val"),
        "--max-resolution",
        "64",
        "--workers",
        "1",
    )
    assert written.returncode == 0, written.stderr[-2000:]
    config = REPO / "configs" / "imagenet_dml_resnet18.yaml"
    overrides = [
        f"data.root={data}",
        "replicas=2",
        "data.batch_size=4",
        "data.eval_batch_size=8",
        "data.num_workers=1",
        "data.resolution.min_res=32",
        "data.resolution.max_res=64",
        "data.resolution.start_ramp=0",
        "data.resolution.end_ramp=1",
        "data.resolution.eval_res=64",
        "optim.lr=0.05",
        "train.epochs=2",
        "train.eval_every=1",
        "train.bf16=false",
        "train.channels_last=false",
        "train.device=cpu",
        "train.threads_per_rank=1",
        "train.trace=true",
        "train.dist_timeout_s=120",
        "train.progress=false",
        "data.order=page_local",
    ]
    run = tmp_path / "run"
    result = run_cli("train", str(config), f"run_dir={run}", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    traces = {(m, r): read_trace(run, m, r) for m in range(2) for r in range(2)}
    for r in range(2):  # members read the same samples; the replicas of a member, disjoint ones
        assert [s["indices"] for s in traces[0, r][0]] == [s["indices"] for s in traces[1, r][0]]
    for epoch in range(2):
        shards = [{i for s in traces[0, r][0] if s["epoch"] == epoch for i in s["indices"]} for r in range(2)]
        assert shards[0] and not shards[0] & shards[1]
    for m in range(2):
        assert traces[m, 0][1]["param_digest"] == traces[m, 1][1]["param_digest"]

    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    last = sorted((moved / "checkpoints").glob("step-*"))[-1]
    (last / MARKER).unlink()
    shutil.rmtree(moved / "predictions")
    resumed = run_cli("train", str(config), f"run_dir={moved}", "resume=auto", *overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at epoch 1 batch 0" in resumed.stdout
    for m in range(2):
        assert read_trace(moved, m, 0)[1]["param_digest"] == traces[m, 0][1]["param_digest"]
    assert np.array_equal(
        np.load(moved / "predictions" / "test.npz")["logits"], np.load(run / "predictions" / "test.npz")["logits"]
    )


def test_rank_0_writes_tensorboard_scalars_equal_to_the_metrics(dml_pair):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run, _ = dml_pair
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1  # rank 0 alone
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "val/acc/m0",
        "test/nll/m1",
        "val/ece/ensemble",
        "val/disagreement/ensemble",
        "train/mimicry/m0",
        "train/ce/m1",
        "train/lr/m0",
        "train/images_per_s/m1",
        "train/exchange_seconds/m0",
    } <= tags
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for tag, split, member, key in (
        ("val/nll/m0", "val", 0, "nll"),
        ("train/mimicry/m1", "val", 1, "mimicry"),
        ("test/disagreement/ensemble", "test", "ensemble", "disagreement"),
    ):
        logged = {e.step: e.value for e in events.Scalars(tag)}
        expected = {r["epoch"]: r[key] for r in rows if r["split"] == split and r["member"] == member}
        assert logged.keys() == expected.keys() and all(
            logged[e] == pytest.approx(expected[e], rel=1e-6) for e in logged
        )
