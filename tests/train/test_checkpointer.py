"""The checkpointer on a one-process group: what a part holds round-trips exactly, a part that
cannot be read is one agreed error, and the cadence says when a save happens."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cohort.config import CohortConfig, MemberConfig
from cohort.models import build_model
from cohort.run.checkpoint_files import MARKER, checkpoint_dir, latest_complete, read_marker
from cohort.run.files import RunDirError
from cohort.train.checkpointer import CHECKPOINT_FORMAT, Checkpointer, Position
from tests.conftest import one_rank


def member(tmp_path, **train) -> tuple[CohortConfig, torch.nn.Module, torch.optim.Optimizer]:
    config = CohortConfig(members=[MemberConfig(arch="small_cnn")], run_dir=str(tmp_path / "run"))
    for key, value in train.items():
        setattr(config.train, key, value)
    torch.manual_seed(0)
    net = build_model("small_cnn", 10, [0.5] * 3, [0.25] * 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.rand(4, 3, 32, 32)).sum().backward()  # a momentum buffer to carry
    optimizer.step()
    return config, net, optimizer


def test_a_saved_part_loads_back_bit_identical_with_its_position_and_rng(tmp_path):
    config, net, optimizer = member(tmp_path)
    with one_rank(config) as mesh:
        checkpointer = Checkpointer(config, mesh, net, optimizer)
        sums = {"terms": {"ce": 1.5, "loss": 2.5}, "skipped_steps": 1}
        torch.manual_seed(7), np.random.seed(7), random.seed(7)
        checkpointer.save(Position(2, 3, 11, sums))
        expected = {k: v.clone() for k, v in net.state_dict().items()}
        draws = (torch.rand(3), np.random.rand(3), random.random())
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        optimizer.state.clear()
        folder, position = checkpointer.resume()
    assert folder == checkpoint_dir(config.run_dir, 11) == latest_complete(config.run_dir)
    assert read_marker(folder) == {"members": 1, "epoch": 2, "batch": 3, "step": 11}
    assert position == Position(2, 3, 11, sums)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in expected.items())
    assert all("momentum_buffer" in state for state in optimizer.state.values()) and optimizer.state
    assert torch.equal(torch.rand(3), draws[0]) and np.array_equal(np.random.rand(3), draws[1])
    assert random.random() == draws[2]  # the RNG states continue where the save left them


def test_a_damaged_part_is_one_agreed_error_naming_it(tmp_path):
    config, net, optimizer = member(tmp_path)
    with one_rank(config) as mesh:
        checkpointer = Checkpointer(config, mesh, net, optimizer)
        checkpointer.save(Position(1, 0, 4))
        part = checkpoint_dir(config.run_dir, 4) / "member-0.pt"
        part.write_bytes(b"not a checkpoint")
        with pytest.raises(RunDirError, match=rf"{part} cannot be read .*delete .* to resume from an earlier one"):
            checkpointer.resume()


def test_a_part_of_an_earlier_format_or_another_architecture_is_refused(tmp_path):
    config, net, optimizer = member(tmp_path)
    with one_rank(config) as mesh:
        checkpointer = Checkpointer(config, mesh, net, optimizer)
        folder = checkpoint_dir(config.run_dir, 4)
        checkpointer.save(Position(1, 0, 4))
        part = folder / "member-0.pt"
        state = torch.load(part, weights_only=False)
        torch.save({**state, "format": CHECKPOINT_FORMAT - 1}, part)
        with pytest.raises(RunDirError, match="format 1, written by an earlier cohort"):
            checkpointer.load(folder)
        torch.save({**state, "arch": "resnet20"}, part)
        with pytest.raises(RunDirError, match="holds a resnet20, but member 0 is a small_cnn"):
            checkpointer.load(folder)


def test_the_cadence_saves_the_last_epoch_every_nth_epoch_and_step_and_at_an_agreed_stop(tmp_path):
    config, net, optimizer = member(tmp_path, epochs=5, checkpoint_every=2, checkpoint_every_steps=3)
    with one_rank(config) as mesh:
        checkpointer = Checkpointer(config, mesh, net, optimizer)
        assert [e for e in range(5) if checkpointer.saves_after_epoch(e)] == [1, 3, 4]
        assert [s for s in range(1, 10) if checkpointer.saves_after_step(s, stopping=False)] == [3, 6, 9]
        assert checkpointer.saves_after_step(4, stopping=True)
        checkpointer.after_step(Position(0, 2, 2))  # not due: nothing written
        checkpointer.after_step(Position(0, 3, 3))
        checkpointer.after_epoch(0, 5)  # epoch 0 of 5, every 2nd: not due
        checkpointer.after_epoch(4, 10)
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if (p / MARKER).is_file())
    assert saved == ["step-000000003", "step-000000010"]
    assert read_marker(tmp_path / "run" / "checkpoints" / "step-000000010")["epoch"] == 5


def test_without_a_cadence_only_the_last_epoch_is_saved(tmp_path):
    config, net, optimizer = member(tmp_path, epochs=3)
    with one_rank(config) as mesh:
        checkpointer = Checkpointer(config, mesh, net, optimizer)
        assert [e for e in range(3) if checkpointer.saves_after_epoch(e)] == [2]
        assert not any(checkpointer.saves_after_step(s, stopping=False) for s in range(1, 100))
