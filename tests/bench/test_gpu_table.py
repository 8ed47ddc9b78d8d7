"""bench/gpu_table.py on the rehearsal's real results file (bench/results/gpu_rehearsal.json,
written by `bash bench/gpu_rehearsal.sh`), and on the same file read as a GPU's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REHEARSAL = REPO / "bench" / "results" / "gpu_rehearsal.json"

DOC = """# results

- The GPU rows:

  <!-- gpu_table: gpu -->
  | on a GPU | status |
  |---|---|
  | `torch.compile` on and off (`compile`) | not measured on a GPU |
  <!-- gpu_table: end -->

The rehearsal:

<!-- gpu_table: rehearsal -->
<!-- gpu_table: end -->

After.
"""


def table(doc: Path, results: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "bench" / "gpu_table.py"), str(results), "--doc", str(doc), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def block(text: str, kind: str) -> str:
    return text.split(f"<!-- gpu_table: {kind} -->", 1)[1].split("<!-- gpu_table: end -->", 1)[0]


def test_a_rehearsal_fills_the_rehearsal_table_and_leaves_the_gpu_table(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(DOC)
    done = table(doc, REHEARSAL)
    assert done.returncode == 0, done.stderr
    written = doc.read_text()
    assert block(written, "gpu") == block(DOC, "gpu")
    rehearsal = block(written, "rehearsal")
    assert "not GPU figures" in rehearsal
    assert "two runs bit-identical: yes" in rehearsal and "bit-identical yes" in rehearsal
    assert "| ResNet-50 at 160 px;" in rehearsal and rehearsal.rstrip().endswith("not measured |")
    assert written.endswith("<!-- gpu_table: end -->\n\nAfter.\n")


def test_a_gpu_results_file_fills_the_gpu_table_indented_and_keeps_what_it_has_no_figure_for(tmp_path):
    results = json.loads(REHEARSAL.read_text())
    results["smoke"] = False
    results["rows"]["environment"]["gpus"] = ["NVIDIA H100 80GB HBM3"]
    del results["rows"]["compile"]
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps(results))
    doc = tmp_path / "results.md"
    doc.write_text(DOC)
    done = table(doc, gpu)
    assert done.returncode == 0, done.stderr
    lines = block(doc.read_text(), "gpu").strip("\n").splitlines()
    assert all(line.startswith("  |") for line in lines[:-1]) and lines[-1] == "  "
    assert "| `torch.compile` on and off (`compile`) | not measured on a GPU |" in lines[5]
    assert "NVIDIA H100 80GB HBM3, " in lines[2] and "× per member" in lines[2]
    assert block(doc.read_text(), "rehearsal") == block(DOC, "rehearsal")


def test_print_writes_nothing(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text(DOC)
    done = table(doc, REHEARSAL, "--print")
    assert done.returncode == 0 and done.stdout.startswith("| rehearsal on the CPU")
    assert doc.read_text() == DOC


def test_bad_input_is_one_line_naming_the_culprit(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# no block here\n")
    not_json = tmp_path / "run.log"
    not_json.write_text("[environment] ok\n")
    for results, culprit in ((not_json, str(not_json)), (REHEARSAL, str(doc))):
        done = table(doc, results)
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("gpu_table: error: ") and culprit in done.stderr
