"""``train.trace``: every step's losses and batch digests, one JSON line a step, per rank
(``RUN_DIR/trace/member{m}-replica{r}.jsonl``); the tests compare them across ranks, layouts
and resumes."""

from __future__ import annotations

import hashlib
import json

import torch

from cohort.data.batch import Batch
from cohort.run.directory import RunDir
from cohort.run.files import writing


def parameter_digest(net: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer: equal digests mean bit-identical models."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class StepTrace:
    """This rank's trace file, appended to when the run resumes."""

    def __init__(self, run: RunDir, member: int, replica: int, resumed: bool):
        self.path = run.trace / f"member{member}-replica{replica}.jsonl"
        with writing(self.path):  # each rank its own file: a full disk is that rank's one line
            run.trace.mkdir(exist_ok=True)
            # Line-buffered: a trace is read while the run goes on (the fault-tolerance tests do).
            self.file = open(self.path, "a" if resumed else "w", buffering=1)

    def write(self, row: dict) -> None:
        with writing(self.path):
            self.file.write(json.dumps(row) + "\n")

    def step(self, step: int, epoch: int, batch: Batch, drawn: dict, terms: dict[str, torch.Tensor] | None) -> None:
        """One step: its batch (labels, indices), what its inputs drew, its terms (or ``skipped``)."""
        self.write(
            {
                "step": step,
                "epoch": epoch,
                "labels": batch.labels.tolist(),
                "indices": batch.indices.tolist(),
                **drawn,
                **{k: float(v) for k, v in (terms or {"skipped": 1}).items()},
            }
        )

    def flush(self) -> None:
        with writing(self.path):
            self.file.flush()

    def finish(self, net: torch.nn.Module, teachers: dict[int, torch.nn.Module]) -> None:
        """The last line: digests of the member's and its teachers' final parameters."""
        self.write(
            {
                "final": True,
                "param_digest": parameter_digest(net),
                "teacher_digests": {j: parameter_digest(t) for j, t in teachers.items()},
            }
        )
        with writing(self.path):
            self.file.close()
