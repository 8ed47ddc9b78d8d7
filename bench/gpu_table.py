"""Fill docs/results.md's GPU table from a results file of ``bench/gpu_check.sh``.

    python bench/gpu_table.py RESULTS [--doc docs/results.md] [--print]

The table sits between ``<!-- gpu_table: gpu -->`` and ``<!-- gpu_table: end -->``; a run with
``--smoke`` (on a CPU: no GPU figure) fills the rehearsal's table instead, between
``<!-- gpu_table: rehearsal -->`` and its end marker. Each row of ``ROWS`` whose result is in the
file gets a status written from it (the machine, the date and the figures); the others keep
what the table said. ``--print`` prints the table and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
END = "<!-- gpu_table: end -->"

ROWS = (
    ("packed", "2 and 4 members packed on one GPU, images/s per member against one (`packed`)"),
    ("loader", "a CIFAR ResNet-18 fed by the FFCV loader against synthetic data already on the GPU (`formats`)"),
    ("formats", "bf16 and channels_last on and off (`formats`)"),
    ("compile", "`torch.compile` on and off (`compile`)"),
    ("resume", "resume on CUDA after the RNG-state fix: bit-identical test logits (`resume`)"),
    ("contexts", "no stray CUDA context, host memory per rank (`packed`); SIGUSR1 with NCCL up (`sigusr1`)"),
    ("imagenet", "ResNet-50 at 160 px; ffcv-imagenet's 8 ResNet-18s on 8 GPUs against an independent and a DML cohort"),
)
"""(key, the row's first cell) in table order; a status comes from the results' rows of the same
purpose (``STATUS``), ``imagenet`` from none: the check does not run it."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a results file of bench/gpu_check.sh (JSON)")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "results.md")
    parser.add_argument("--print", action="store_true", help="print the table; write nothing")
    args = parser.parse_args()
    try:
        results = json.loads(args.results.read_text())
        rows = results["rows"]
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"gpu_table: error: {args.results} is no results file of bench/gpu_check.sh ({error}); pass its JSON")
    kind = "rehearsal" if results.get("smoke") else "gpu"
    begin = f"<!-- gpu_table: {kind} -->"
    doc = args.doc.read_text()
    if begin not in doc or END not in doc.split(begin, 1)[1]:
        if args.print:
            print(render(results, rows, {}, kind))
            return 0
        sys.exit(f"gpu_table: error: {args.doc} has no '{begin}' ... '{END}' block; add one around the table")
    head, rest = doc.split(begin, 1)
    old, tail = rest.split(END, 1)
    table = render(results, rows, previous_statuses(old), kind)
    if args.print:
        print(table)
        return 0
    indent = head.rsplit("\n", 1)[-1]  # the marker's own indentation (the table may sit in a list item)
    table = "\n".join(f"{indent}{line}" for line in table.splitlines())
    args.doc.write_text(f"{head}{begin}\n{table}\n{indent}{END}{tail}")
    print(f"gpu_table: wrote {sum(1 for key, _ in ROWS if status(key, rows))} rows of {args.doc}'s {kind} table")
    return 0


def previous_statuses(block: str) -> dict[str, str]:
    """{first cell: status} of the table now in the doc."""
    found = {}
    for line in map(str.strip, block.splitlines()):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and not set(cells[0]) <= set("-"):
            found[cells[0]] = cells[-1]
    return found


def render(results: dict, rows: dict, previous: dict[str, str], kind: str) -> str:
    environment = rows.get("environment", {})
    where = ", ".join(environment.get("gpus", [])) or "CPU"
    source = f"{where}, {results.get('started', '?')[:10]}, torch {environment.get('torch', '?')}"
    title = "on a GPU" if kind == "gpu" else "rehearsal on the CPU (`--smoke`): not GPU figures"
    lines = [f"| {title} | status |", "|---|---|"]
    for key, cell in ROWS:
        figures = status(key, rows)
        lines.append(f"| {cell} | {f'{source}: {figures}' if figures else previous.get(cell, 'not measured')} |")
    return "\n".join(lines)


def status(key: str, rows: dict) -> str:
    """The status cell of row ``key`` from the results' rows ("" when they hold none for it)."""
    parts = [text for name, make in STATUS.get(key, ()) if (text := run_one(make, rows.get(name)))]
    return "; ".join(parts)


def run_one(make, row: dict | None) -> str:
    if not row:
        return ""
    if not row.get("status", "").startswith("ok"):
        return f"{row.get('status', 'no status')[:200]}"
    probe = " (torch-only probe, not cohort train)" if "torch-only probe" in row["status"] else ""
    return make(row) + probe


def packed_text(row: dict) -> str:
    runs = row["runs"]
    return (
        ", ".join(
            f"K = {k}: {runs[k]['per_member_vs_alone']:.2f}× per member" for k in sorted(runs, key=int) if k != "1"
        )
        + f" (K = 1: {runs['1']['images_per_s']:.0f} img/s)"
    )


def loader_text(row: dict) -> str:
    rates = row["images_per_s"]
    if "ffcv loader" not in rates:
        return "not fed by the FFCV loader"
    real, synthetic = rates["ffcv loader"], rates["synthetic on the device"]
    return "FFCV loader / synthetic: " + ", ".join(f"{v} {real[v] / synthetic[v]:.2f}×" for v in real)


def formats_text(row: dict) -> str:
    rates = row["images_per_s"].get("ffcv loader") or row["images_per_s"]["synthetic on the device"]
    fp32 = rates["fp32"]
    return f"fp32 {fp32:.0f} img/s; " + ", ".join(f"{v} {r / fp32:.2f}×" for v, r in rates.items() if v != "fp32")


def compile_text(row: dict) -> str:
    rates, first = row["images_per_s"], row["first_steps_s"]
    off, on = rates["bf16+cl compile=False"], rates["bf16+cl compile=True"]
    text = (
        f"bf16 + channels_last {off:.0f} → {on:.0f} img/s compiled ({on / off:.2f}×), first step "
        f"{first['bf16+cl compile=False']} → {first['bf16+cl compile=True']} s"
    )
    if trained := row.get("cohort_train"):
        off, on = trained["false"], trained["true"]
        text += (
            f"; cohort train {off['images_per_s']:.0f} → {on['images_per_s']:.0f} img/s, "
            f"test acc {off['test_acc']:.3f} / {on['test_acc']:.3f}"
        )
    return text


def resume_text(row: dict) -> str:
    return (
        f"two runs bit-identical: {yes(row['two_runs_bit_identical'])}; resumed from {row['resumed_from']}: "
        f"bit-identical {yes(row['resumed_bit_identical'])}"
    )


def contexts_text(row: dict) -> str:
    parts = []
    for k, run in sorted(row["runs"].items(), key=lambda item: int(item[0])):
        held = run.get("ranks_with_cuda_context")
        contexts = "contexts not seen" if held is None else f"{held} of {run['ranks_seen']} ranks hold a context"
        others = run.get("non_rank_processes_with_cuda_context", 0)
        peaks = run["peak_host_mib_per_rank"]
        parts.append(f"K = {k}: {contexts}, {others} other processes, peak host MiB per rank {peaks}")
    return "; ".join(parts)


def sigusr1_text(row: dict) -> str:
    after = f"SIGUSR1 to {row['signalled_ranks']} rank(s): exit 0 {row.get('exit_after_signal_s')} s after"
    if "stopped_at_steps" in row:  # the torch-only probe: no checkpoint to save
        return f"{after}, stopped at steps {row['stopped_at_steps']}"
    return f"{after}, checkpoint {row['checkpoints'][-1] if row.get('checkpoints') else 'none'}"


def yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


STATUS = {
    "packed": (("packed", packed_text),),
    "loader": (("formats", loader_text),),
    "formats": (("formats", formats_text),),
    "compile": (("compile", compile_text),),
    "resume": (("resume", resume_text),),
    "contexts": (("packed", contexts_text), ("sigusr1", sigusr1_text)),
}
"""Row key: the results' rows (name, how to say it) that fill it."""


if __name__ == "__main__":
    sys.exit(main())
