"""Every GPU figure the docs mark "not measured" or "not re-run", in one run, into one results file.

    bash bench/gpu_check.sh [RESULTS]                  # on a lent GPU machine (installs wheels/ first)
    python bench/gpu_check.py [--out RESULTS] [--budget-s 450] [--rows NAME ...] [--smoke]

For one H100/H200 and at most 8 minutes (docs/results.md, "The GPU check"). Each row runs in
a process of its own under its own time limit (``ROW_LIMITS_S``, cut to what is left of
``--budget-s``), so one hang costs that row only; a row that ran out is killed with its
process group and says so. After each row the results file (JSON; default
``$OUT/gpu_check.json`` when ``$OUT`` is set, else ``runs/gpu_check.json``) is rewritten, so
a whole run killed from outside still leaves the rows it finished. The rows:

- ``environment``: Python, torch, CUDA, NCCL, the GPU, and each package cohort imports
  (FFCV's compiled extension: which shared libraries it misses), a C compiler (inductor and
  Triton build C at run time).
- ``data``: a CIFAR-size data folder written as FFCV .beton files on the machine
  (``cohort.data.datasets.write_arrays``; synthetic 32 × 32 images whose colour depends on
  the class), which the rows below train on.
- ``resume``: a K = 1 ``cohort train`` on CUDA, the same run again, and a copy resumed from a
  middle checkpoint (the RNG-state fix): bit-identical test logits?
- ``packed``: K = 1, 2 and 4 (``--smoke``: 1 and 2) DML members packed on the one GPU (``train.members_per_gpu:
  auto``: NCCL for each member's replica group beside the gloo exchange), images/s per member
  against K = 1; sampled meanwhile: which processes hold a CUDA context (``nvidia-smi
  --query-compute-apps``; only the worker ranks may, one each) and each rank's peak host
  memory (``VmHWM``).
- ``formats``: a CIFAR ResNet-18 training step (forward, cross-entropy, backward, SGD), fp32,
  bf16, channels_last and both, fed by cohort's FFCV loader from the .beton and fed
  synthetic images already on the GPU, side by side in one process.
- ``sigusr1``: SIGUSR1 sent to the ranks of a CUDA ``cohort train`` (NCCL initialised): do
  they agree on a step, save there and exit 0, and how long after the signal?
- ``compile``: ``torch.compile`` on and off for the same step on synthetic GPU data (compile
  time and images/s), and a ``cohort train train.compile=true`` run against ``=false``.

Without CUDA each of those rows says ``skipped: no CUDA``; ``--smoke`` runs them on the CPU
instead with a small CNN and a few steps, to check this script (its figures are no GPU's).
Without FFCV (or what it needs) the rows that train through ``cohort train`` say what is
missing, and ``formats`` and ``compile`` still run on the synthetic GPU data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS = ("environment", "data", "resume", "packed", "formats", "sigusr1", "compile")
"""In the order they run: what the docs wait for most comes first."""
ROW_LIMITS_S = {
    "environment": 60,
    "data": 90,
    "resume": 150,
    "packed": 200,
    "formats": 150,
    "sigusr1": 100,
    "compile": 200,
}
"""Each row's own time limit; a row gets at most what is left of the whole budget."""
SMOKE_SLOWER = 8
"""``--smoke``: a CPU (2 shared cores here) takes this many times the GPU's limits."""
IMPORTS = ("numpy", "yaml", "numba", "llvmlite", "cv2", "ffcv", "scipy", "tqdm", "PIL", "submitit", "triton")
"""What ``cohort train`` imports besides torch (``triton``: torch.compile on CUDA)."""
COHORT_IMPORTS = ("cohort.data.loader", "cohort.train.worker", "cohort.cli")
"""cohort's own modules that import the most: what they miss that ``IMPORTS`` does not name."""
DISTRIBUTIONS = ("torch", "torchvision", "numpy", "triton", "numba", "llvmlite", "opencv-python-headless", "scipy")
DISTRIBUTIONS += ("pyyaml", "tqdm", "pillow", "ffcv", "submitit", "assertpy", "scikit-learn", "matplotlib")
"""Whose installed versions the environment row records (bench/gpu_machine.txt pins the rehearsal's)."""


# --- running the rows ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else REPO / "runs/gpu_check.json"
    parser.add_argument("--out", type=Path, default=default_out, help=f"results file (default {default_out})")
    parser.add_argument("--budget-s", type=float, default=450, help="all rows together, seconds (default 450)")
    parser.add_argument("--rows", nargs="*", choices=ROWS, default=list(ROWS))
    parser.add_argument("--smoke", action="store_true", help="without CUDA: run the rows on the CPU, small")
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # one row, in a child process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        return run_row_here(args.row, args.work, args.smoke)

    started = time.monotonic()
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), "smoke": args.smoke}
    results["rows"] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        for name in args.rows:
            left = args.budget_s - (time.monotonic() - started)
            if left < 10:
                results["rows"][name] = {"status": f"skipped: the {args.budget_s:g} s budget was spent"}
            else:
                limit = ROW_LIMITS_S[name] * (SMOKE_SLOWER if args.smoke else 1)
                results["rows"][name] = run_row(name, Path(work), min(limit, left), args.smoke)
            row = results["rows"][name]
            print(f"[{name}] {row['status']} ({row.get('seconds', 0):.0f} s)", flush=True)
            for line in row.get("lines", []):
                print(f"  {line}", flush=True)
            results["seconds"] = round(time.monotonic() - started, 1)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.out} ({results['seconds']:.0f} s)")
    return 0


def run_row(name: str, work: Path, limit_s: float, smoke: bool) -> dict:
    """Row ``name`` in a child process (a session of its own) killed with all it started after ``limit_s``."""
    out = work / f"{name}.json"
    command = [sys.executable, __file__, "--row", name, "--work", str(work), *(["--smoke"] if smoke else [])]
    start = time.monotonic()
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    child = subprocess.Popen(command, cwd=REPO, start_new_session=True, **pipes)
    try:
        printed, _ = child.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        try:  # a process of another session may still hold the pipe: do not wait on it for long
            printed, _ = child.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            printed = b""
        row = {"status": f"timed out after {limit_s:.0f} s (killed)"}
    else:
        if out.is_file():
            row = json.loads(out.read_text())
        else:
            row = {"status": f"failed: exit {child.returncode} without a result"}
    row["seconds"] = round(time.monotonic() - start, 1)
    if not row["status"].startswith(("ok", "skipped")):
        row["output_tail"] = printed.decode(errors="replace")[-3000:]
    return row


def run_row_here(name: str, work: Path, smoke: bool) -> int:
    """The child: run the row, write its result (an exception is a failed row, with its message)."""
    import traceback

    try:
        row = ROW_FUNCTIONS[name](Setting.of(work, smoke))
    except Exception as error:
        traceback.print_exc()
        row = {"status": f"failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]}
    (work / f"{name}.json").write_text(json.dumps(row, indent=1))
    return 0


class Setting:
    """Where a row runs and how big: CUDA and a CIFAR ResNet-18, or (``--smoke``) the CPU and a
    small CNN. ``steps``: the timed steps of an in-process measurement; ``epoch_steps``: a
    ``cohort train`` epoch's (0: the whole training split, 70 steps of 256 on CUDA, so that an
    epoch's images/s is not mostly its start); ``checkpoint_every``: the resume row's."""

    def __init__(self, work: Path, device: str, arch: str, batch: int, steps: int, epoch_steps: int, smoke: bool):
        self.work, self.device, self.arch, self.batch, self.smoke = work, device, arch, batch, smoke
        self.steps, self.epoch_steps = steps, epoch_steps
        self.checkpoint_every = epoch_steps // 2 if epoch_steps else 30
        self.data = work / "data"
        # --smoke on 2 CPU cores: K = 4 ranks would each compile FFCV's pipeline at once, and
        # K = 2 already takes every path of the row.
        self.packed_ks = (1, 2) if smoke else (1, 2, 4)
        self.epochs = 2 if smoke else 3  # cohort train's; the first is left out of images/s

    @classmethod
    def of(cls, work: Path, smoke: bool) -> Setting:
        import torch

        if torch.cuda.is_available():
            return cls(work, "cuda", "resnet18", 256, 40, 0, False)
        return cls(work, "cpu" if smoke else "", "small_cnn", 32, 4, 4, True)

    def skip(self) -> dict | None:
        """The result of a CUDA row where there is no CUDA and no ``--smoke``."""
        return None if self.device else {"status": "skipped: no CUDA"}

    def status(self) -> str:
        return "ok" if not self.smoke else "ok (smoke run on the CPU: not a GPU figure)"


# --- the rows -----------------------------------------------------------------------------------


def environment(s: Setting) -> dict:
    import torch

    row = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "c_compiler": shutil.which("cc") or shutil.which("gcc") or "",
        "nvidia_smi": shutil.which("nvidia-smi") or "",
    }
    if torch.cuda.is_available():
        row["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        row["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    manifest = REPO / "wheels" / "MANIFEST"  # what bench/gpu_wheels.sh carried and left out
    if manifest.is_file():
        row["wheels_manifest"] = manifest.read_text().splitlines()
    row["versions"] = versions()
    row["imports"] = import_problems(IMPORTS + COHORT_IMPORTS)
    missing = [name for name, problem in row["imports"].items() if problem != "ok"]
    libffcv = ffcv_extension_problem()
    if libffcv:
        row["ffcv_extension"] = libffcv
    lines = [f"python {row['python']}, torch {row['torch']}, CUDA {row['cuda']}, GPUs {row.get('gpus', [])}"]
    lines.append("missing: " + (", ".join(f"{m} ({row['imports'][m]})" for m in missing) if missing else "nothing"))
    if libffcv:
        lines.append(f"FFCV's extension: {libffcv}")
    row.update(status="ok", lines=lines)
    return row


def versions() -> dict[str, str]:
    """{distribution: version} of ``DISTRIBUTIONS`` as installed here ("not installed" if not)."""
    from importlib import metadata

    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def import_problems(names: tuple[str, ...]) -> dict[str, str]:
    """{name: "ok" or why ``import name`` fails}, tried one after the other in one fresh
    interpreter (torch is imported once: on 2 CPU cores, an interpreter each took a minute);
    should that interpreter die (a crash in a compiled extension), one interpreter each."""
    code = (
        "import importlib, json, sys\nfound = {}\nfor name in sys.argv[1:]:\n    try:\n"
        "        importlib.import_module(name)\n        found[name] = 'ok'\n    except BaseException as error:\n"
        "        found[name] = f'{type(error).__name__}: {error}'[:200]\nprint(json.dumps(found))"
    )
    probe = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    if probe.returncode == 0 and probe.stdout.strip():
        return json.loads(probe.stdout.strip().splitlines()[-1])
    with ThreadPoolExecutor(len(names)) as pool:
        return dict(zip(names, (p or "ok" for p in pool.map(import_problem, names))))


def import_problem(name: str) -> str:
    """Why ``import name`` fails in a fresh interpreter ("" when it works)."""
    probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
    return "" if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1][:200]


def ffcv_extension_problem() -> str:
    """The shared libraries (or symbol versions) FFCV's compiled extension cannot find (``ldd``),
    "" when none or no FFCV."""
    import importlib.util

    spec = importlib.util.find_spec("ffcv")
    if spec is None or not spec.submodule_search_locations:
        return ""
    package = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(package.glob("_libffcv*.so")) + sorted(package.parent.glob("_libffcv*.so"))
    if not found:
        return f"no _libffcv*.so in {package} or beside it"
    ldd = subprocess.run(["ldd", str(found[0])], capture_output=True, text=True)
    missing = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    missing += [line.strip() for line in ldd.stderr.splitlines() if "not found" in line]  # `GLIBCXX_3.4.30' not found
    return f"{found[0].name} misses {', '.join(missing)}" if missing else ""


def data(s: Setting) -> dict:
    """A CIFAR-size data folder written here: synthetic 32 × 32 images, 10 classes."""
    import numpy as np

    if problem := seen_problem(s, "ffcv"):
        return {"status": f"skipped: FFCV cannot be imported ({problem})"}
    from cohort.data.datasets import write_arrays

    rng = np.random.default_rng(0)
    train_n, test_n = (20_000, 2_000) if not s.smoke else (1_000, 250)
    colour = rng.integers(0, 256, (10, 1, 1, 3))  # each class its own tint, in every split: a learnable signal

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n)
        noise = rng.integers(0, 256, (n, 32, 32, 3))
        return ((noise + colour[labels]) // 2).astype(np.uint8), labels.astype(np.int64)

    start = time.monotonic()
    train_images, train_labels = images(train_n)
    test_images, test_labels = images(test_n)
    write_arrays(s.data, "synthetic32", train_images, train_labels, test_images, test_labels, 0.1, list("0123456789"))
    return {
        "status": "ok",
        "images": {"train+val": train_n, "test": test_n},
        "lines": [f"wrote {train_n} + {test_n} synthetic 32×32 images as .beton in {time.monotonic() - start:.1f} s"],
    }


def seen_problem(s: Setting, name: str) -> str:
    """Why ``import name`` fails ("" when it works): the environment row's answer, else tried now."""
    seen = s.work / "environment.json"
    imports = json.loads(seen.read_text()).get("imports", {}) if seen.is_file() else {}
    problem = imports.get(name) or import_problem(name)
    return "" if problem == "ok" else problem


def cohort_train_problem(s: Setting) -> str:
    """Why ``cohort train`` cannot run here ("" when it can), from the environment row's imports."""
    for name in ("ffcv", "numba", "yaml", "scipy", "tqdm", "cohort.train.worker"):
        if problem := seen_problem(s, name):
            return f"cohort train needs {name} ({problem})"
    if not (s.data / "meta.json").is_file():
        return "the data row wrote no data folder"
    return ""


def train(s: Setting, run_dir: Path, *overrides: str, members: int = 1, wait=None, summarise: bool = True) -> dict:
    """A real ``cohort train`` of ``members`` DML members on the data row's folder; its
    metrics' summary (with ``summarise``) and what ``wait(process)``, run while it trains
    (the samplers), returned."""
    names = ", ".join(f"{{name: m{i}, arch: {s.arch}, policy: crop}}" for i in range(members))
    command = [
        sys.executable,
        "-m",
        "cohort.cli",
        "train",
        str(REPO / "configs" / "digits_pair.yaml"),
        f"members=[{names}]",
        f"loss.mimicry.weight={1 if members > 1 else 0}",
        f"data.root={s.data}",
        f"data.batch_size={s.batch}",
        "data.num_workers=4" if not s.smoke else "data.num_workers=1",
        f"train.device={s.device}",
        f"train.epochs={s.epochs}",
        f"train.max_steps_per_epoch={s.epoch_steps}",
        "train.progress=false",
        "train.threads_per_rank=0",
        "train.dist_timeout_s=60",
        f"run_dir={run_dir}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    extra = wait(child) if wait else {}
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"cohort train exited {child.returncode}: {(err.strip() or out.strip())[-500:]}")
    if not summarise:
        return {"stdout_tail": out[-400:], **extra}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val" and r["member"] != "ensemble" and r["epoch"] >= 1]
    test = [r for r in rows if r["split"] == "test" and r["member"] != "ensemble"][-1]
    return {
        "images_per_s": round(statistics.median(r["images_per_s"] for r in val), 1),
        "test_acc": test["acc"],
        "stdout_tail": out[-400:],
        **extra,
    }


def test_logits(run_dir: Path):
    import numpy as np

    with np.load(run_dir / "predictions" / "test.npz") as saved:
        return saved["logits"]


def resume(s: Setting) -> dict:
    import numpy as np

    if skip := s.skip():
        return skip
    if problem := cohort_train_problem(s):
        return {"status": f"skipped: {problem}"}
    fast = ["train.bf16=true", "train.channels_last=true", f"train.checkpoint_every_steps={s.checkpoint_every}"]
    fast.append("train.keep_last=0")
    whole, again, resumed = (s.work / f"resume-{n}" for n in ("whole", "again", "resumed"))
    train(s, whole, *fast)
    train(s, again, *fast)
    checkpoints = sorted((whole / "checkpoints").glob("step-*"))
    shutil.copytree(whole, resumed)
    middle = checkpoints[len(checkpoints) // 2]
    for later in sorted((resumed / "checkpoints").glob("step-*")):
        if later.name > middle.name:
            shutil.rmtree(later)
    train(s, resumed, *fast, "resume=auto")
    same_twice = bool(np.array_equal(test_logits(whole), test_logits(again)))
    same_resumed = bool(np.array_equal(test_logits(whole), test_logits(resumed)))
    return {
        "status": s.status(),
        "resumed_from": f"{middle.name} of {checkpoints[-1].name}",
        "two_runs_bit_identical": same_twice,
        "resumed_bit_identical": same_resumed,
        "lines": [
            f"two uninterrupted runs: bit-identical test logits {same_twice}",
            f"resumed from {middle.name} of {checkpoints[-1].name}: bit-identical test logits {same_resumed}",
        ],
    }


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    below, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        below += children
        frontier = children
    return below


def is_rank(pid: int) -> bool:
    try:
        return b"LOCAL_RANK=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def peak_rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def cuda_context_pids() -> dict[int, int] | None:
    """{pid: MiB} of the processes holding a CUDA context (nvidia-smi); None without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return None
    query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    listed = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout
    pids = {}
    for line in listed.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0].isdigit():
            pids[int(fields[0])] = int(fields[1]) if fields[1].isdigit() else 0
    return pids


def sampler(child: subprocess.Popen) -> dict:
    """While ``cohort train`` runs: each rank's peak host memory and who holds CUDA contexts."""
    peaks, contexts, others, holding = {}, {}, set(), None
    while child.poll() is None:
        below = descendants(child.pid)
        ranks = [p for p in below if is_rank(p)]
        for pid in ranks:
            peaks[pid] = max(peaks.get(pid, 0.0), peak_rss_mib(pid))
        holding = cuda_context_pids()
        if holding is not None:
            for pid, mib in holding.items():
                if pid in ranks:
                    contexts[pid] = max(contexts.get(pid, 0), mib)
                elif pid == child.pid or pid in below:
                    others.add(pid)  # the launcher, or a non-rank process it started
        time.sleep(0.5)
    if contexts == {} and holding == {}:
        contexts = None  # nvidia-smi lists no process at all: in a container's PID namespace it cannot see them
    return {
        "ranks_seen": len(peaks),
        "peak_host_mib_per_rank": sorted(round(v) for v in peaks.values()),
        "ranks_with_cuda_context": len(contexts) if contexts is not None and shutil.which("nvidia-smi") else None,
        "gpu_mib_per_rank": sorted(contexts.values()) if contexts else [],
        "non_rank_processes_with_cuda_context": len(others),
    }


def probe(s: Setting, ranks: int, name: str, steps: int, wait=None) -> tuple[list[dict], dict]:
    """``bench/gpu_probe.py``'s ``ranks`` torch-only ranks (synthetic data, gloo exchange, NCCL
    up): each rank's result, and what ``wait(process)`` returned."""
    out = s.work / name
    command = [sys.executable, str(REPO / "bench" / "gpu_probe.py"), "--ranks", str(ranks), "--steps", str(steps)]
    command += ["--arch", s.arch, "--batch", str(s.batch), "--device", s.device, "--out", str(out)]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    extra = wait(child) if wait else {}
    printed, _ = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"gpu_probe.py --ranks {ranks} exited {child.returncode}: {printed.strip()[-500:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)], extra


def contexts_text(run: dict) -> str:
    if run["ranks_with_cuda_context"] is None:
        return "not seen (no nvidia-smi, or it lists no process here)"
    held = f"{run['ranks_with_cuda_context']} of {run['ranks_seen']} ranks (MiB {run['gpu_mib_per_rank']})"
    return f"{held}, {run['non_rank_processes_with_cuda_context']} other processes"


def packed_probe(s: Setting, why: str) -> dict:
    """The packed row without cohort train: the torch-only probe's K = 1, 2, 4 ranks (1, 2 with ``--smoke``)."""
    runs = {}
    for k in s.packed_ks:
        ranks, sampled = probe(s, k, f"probe-packed-{k}", s.steps * 2, wait=sampler)
        runs[k] = {
            "images_per_s": round(statistics.median(r["images_per_s"] for r in ranks), 1),
            "cuda_mib_per_device_per_rank": [r["cuda_mib_per_device"] for r in ranks],
            **sampled,
        }
    alone, lines = runs[1]["images_per_s"], [f"torch-only probe (synthetic data, gloo exchange): {why}"]
    for k, run in runs.items():
        run["per_member_vs_alone"] = round(run["images_per_s"] / alone, 3)
        lines.append(
            f"K = {k}: {run['images_per_s']:.0f} img/s per rank ({run['per_member_vs_alone']:.2f}× K = 1); "
            f"peak host MiB per rank {run['peak_host_mib_per_rank']}; CUDA contexts: {contexts_text(run)}; "
            f"CUDA MiB per device per rank {run['cuda_mib_per_device_per_rank']}"
        )
    status = s.status() + " (torch-only probe, not cohort train)"
    return {"status": status, "runs": {str(k): v for k, v in runs.items()}, "lines": lines}


def packed(s: Setting) -> dict:
    if skip := s.skip():
        return skip
    if problem := cohort_train_problem(s):
        return packed_probe(s, problem)
    fast = ["train.bf16=true", "train.channels_last=true", "train.members_per_gpu=auto"]
    runs = {k: train(s, s.work / f"packed-{k}", *fast, members=k, wait=sampler) for k in s.packed_ks}
    alone = runs[1]["images_per_s"]
    lines = []
    for k, run in runs.items():
        run.pop("stdout_tail")
        run["per_member_vs_alone"] = round(run["images_per_s"] / alone, 3)
        lines.append(
            f"K = {k}: {run['images_per_s']:.0f} img/s per member ({run['per_member_vs_alone']:.2f}× K = 1, "
            f"{k * run['per_member_vs_alone']:.2f}× in all); peak host MiB per rank {run['peak_host_mib_per_rank']}; "
            f"CUDA contexts: {contexts_text(run)}"
        )
    return {"status": s.status(), "runs": {str(k): v for k, v in runs.items()}, "lines": lines}


VARIANTS = {"fp32": (False, False), "bf16": (True, False), "channels_last": (False, True), "bf16+cl": (True, True)}


def timed_steps(net, batches, steps: int, bf16: bool, channels_last: bool, device) -> float:
    """images/s of ``steps`` training steps of ``net`` on ``batches`` (after 3 untimed ones)."""
    import torch

    from cohort.data.batch import device_formats, model_input

    autocast, channels_last = device_formats(bf16, channels_last, device)
    net = net.to(memory_format=torch.channels_last) if channels_last else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()

    def step(images, labels):
        with autocast:
            logits = net(model_input(images, channels_last))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step(*next(batches))
    synchronize(device)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        images, labels = next(batches)
        step(images, labels)
        seen += len(labels)
    synchronize(device)
    return seen / (time.perf_counter() - start)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batches(batch: int, device):
    """The same batch of uint8 images already on the device, for ever."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
    while True:
        yield images, labels


def ffcv_batches(s: Setting, device):
    """cohort's training loader (FFCV, pad-crop and flip) over the data row's .beton, epoch after epoch."""
    from cohort.config import load_config
    from cohort.data.loader import MemberLoader

    config = load_config(
        str(REPO / "configs" / "digits_pair.yaml"),
        [
            f"data.root={s.data}",
            f"data.batch_size={s.batch}",
            f"data.num_workers={1 if s.smoke else 8}",
            "members=[{name: m, arch: small_cnn, policy: crop}]",
        ],
    )
    loader = MemberLoader.for_training(config, 0, 0, device)
    epoch = 0
    while True:
        batches = loader.epoch(epoch)
        try:
            for batch in batches:
                yield batch.images, batch.labels
        finally:  # also when the generator is closed mid-epoch: stop FFCV's threads
            batches.close()
        epoch += 1


def fresh_net(s: Setting, device):
    import torch

    from cohort.models import build_model

    torch.manual_seed(0)
    return build_model(s.arch, 10, [0.5] * 3, [0.25] * 3).to(device)


def formats(s: Setting) -> dict:
    import torch

    if skip := s.skip():
        return skip
    device = torch.device(s.device)
    sources = {"synthetic on the device": synthetic_batches(s.batch, device)}
    ffcv_note = "ffcv loader: " + (seen_problem(s, "ffcv") or ("" if (s.data / "meta.json").is_file() else "no data"))
    if ffcv_note == "ffcv loader: ":
        sources["ffcv loader"] = ffcv_batches(s, device)  # one loader, read on across the variants
    figures = {source: {} for source in sources}
    rounds = 1 if s.smoke else 2
    for _ in range(rounds):  # two rounds, the variants alternating: the better of each
        for source, batches in sources.items():
            for name, (bf16, cl) in VARIANTS.items():
                rate = timed_steps(fresh_net(s, device), batches, s.steps, bf16, cl, device)
                figures[source][name] = round(max(figures[source].get(name, 0.0), rate), 1)
    for batches in sources.values():
        batches.close()
    lines = [f"{s.arch}, batch {s.batch}, {s.steps} timed steps, best of {rounds} round(s) (img/s; × fp32):"]
    for source, rates in figures.items():
        fp32 = rates["fp32"]
        lines.append(f"  {source:24s} " + "  ".join(f"{n} {r:.0f} ({r / fp32:.2f}×)" for n, r in rates.items()))
    if "ffcv loader" in figures:
        real, synthetic = figures["ffcv loader"], figures["synthetic on the device"]
        lines.append("  ffcv loader / synthetic: " + "  ".join(f"{n} {real[n] / synthetic[n]:.2f}×" for n in VARIANTS))
    else:
        lines.append(f"  not fed by the FFCV loader ({ffcv_note.split(': ', 1)[1]})")
    return {"status": s.status(), "images_per_s": figures, "lines": lines}


def sigusr1_probe(s: Setting, why: str) -> dict:
    """The sigusr1 row without cohort train: the torch-only probe's 2 ranks, each with NCCL up."""
    sent = {}

    def signal_when_training(child: subprocess.Popen) -> dict:
        out = s.work / "probe-sigusr1"
        while child.poll() is None:
            if all((out / f"rank{r}.training").is_file() for r in range(2)):
                ranks = [p for p in descendants(child.pid) if is_rank(p)]
                for pid in ranks:
                    os.kill(pid, signal.SIGUSR1)
                sent.update(ranks=len(ranks), at=time.monotonic())
                break
            time.sleep(0.2)
        child.wait()
        return {"exit_after_signal_s": round(time.monotonic() - sent["at"], 2) if sent else None}

    ranks, extra = probe(s, 2, "probe-sigusr1", 100_000, wait=signal_when_training)
    reached = [r["stop_signal"] == signal.SIGUSR1 for r in ranks]
    return {
        "status": (s.status() if all(reached) and sent else "failed: the signal did not reach every rank")
        + " (torch-only probe, not cohort train)",
        "signalled_ranks": sent.get("ranks", 0),
        "reached": reached,
        "stopped_at_steps": [r["stopped_at_step"] for r in ranks],
        **extra,
        "lines": [
            f"torch-only probe: {why}",
            f"SIGUSR1 to {sent.get('ranks', 0)} ranks {'with NCCL up' if s.device == 'cuda' else '(CPU: no NCCL)'}: "
            f"reached {sum(reached)}, all exited 0 "
            f"{extra['exit_after_signal_s']} s after it",
        ],
    }


def sigusr1(s: Setting) -> dict:
    if skip := s.skip():
        return skip
    if problem := cohort_train_problem(s):
        return sigusr1_probe(s, problem)
    run_dir = s.work / "sigusr1"
    trace = run_dir / "trace" / "member0-replica0.jsonl"
    sent = {}

    def signal_when_training(child: subprocess.Popen) -> dict:
        while child.poll() is None:
            if trace.is_file() and len(trace.read_text().splitlines()) >= 3:
                ranks = [p for p in descendants(child.pid) if is_rank(p)]
                for pid in ranks:
                    os.kill(pid, signal.SIGUSR1)  # as SLURM's --signal reaches every task
                sent.update(ranks=len(ranks), at=time.monotonic())
                break
            time.sleep(0.2)
        child.wait()
        return {"exit_after_signal_s": round(time.monotonic() - sent["at"], 2) if sent else None}

    # Enough steps that the run is still training when the signal comes; K = 2 would pack on
    # one GPU and take the world group to gloo, so K = 1: its world group is NCCL's.
    try:
        result = train(
            s,
            run_dir,
            "train.trace=true",
            "train.epochs=50",
            wait=signal_when_training,
            summarise=False,
        )
    except RuntimeError as error:
        return {"status": f"failed: {error}"[:400], "signalled_ranks": sent.get("ranks", 0)}
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
    stopped = bool(sent) and bool(checkpoints)
    return {
        "status": s.status() if stopped else "failed: no signal sent or no checkpoint saved",
        "signalled_ranks": sent.get("ranks", 0),
        "checkpoints": checkpoints,
        **result,
        "lines": [
            f"SIGUSR1 to {sent.get('ranks', 0)} rank(s): exit 0 after {result.get('exit_after_signal_s')} s, "
            f"checkpoint {checkpoints[-1] if checkpoints else 'none'}"
        ],
    }


def compile_row(s: Setting) -> dict:
    import torch

    if skip := s.skip():
        return skip
    device = torch.device(s.device)
    figures, first_step = {}, {}
    for name in ("bf16+cl",):  # each compilation costs tens of seconds: the fast variant only
        bf16, cl = VARIANTS[name]
        for compiled in (False, True):
            net = fresh_net(s, device)
            model = torch.compile(net) if compiled else net
            start = time.perf_counter()
            timed_steps(model, synthetic_batches(s.batch, device), 1, bf16, cl, device)  # compiles
            first_step[f"{name} compile={compiled}"] = round(time.perf_counter() - start, 1)
            rate = timed_steps(model, synthetic_batches(s.batch, device), s.steps, bf16, cl, device)
            figures[f"{name} compile={compiled}"] = round(rate, 1)
    lines = [f"{s.arch} on synthetic data on the device, batch {s.batch}, {s.steps} timed steps:"]
    for name in ("bf16+cl",):
        off, on = figures[f"{name} compile=False"], figures[f"{name} compile=True"]
        lines.append(
            f"  {name}: {off:.0f} → {on:.0f} img/s compiled ({on / off:.2f}×); "
            f"first steps {first_step[f'{name} compile=False']} s → {first_step[f'{name} compile=True']} s"
        )
    row = {"status": s.status(), "images_per_s": figures, "first_steps_s": first_step, "lines": lines}
    if problem := cohort_train_problem(s):
        lines.append(f"  cohort train train.compile: skipped ({problem})")
        return row
    fast = ["train.bf16=true", "train.channels_last=true"]
    runs = {flag: train(s, s.work / f"compile-{flag}", *fast, f"train.compile={flag}") for flag in ("false", "true")}
    off, on = runs["false"]["images_per_s"], runs["true"]["images_per_s"]
    row["cohort_train"] = {flag: {k: v for k, v in r.items() if k != "stdout_tail"} for flag, r in runs.items()}
    lines.append(
        f"  cohort train bf16+cl, epochs 2-{s.epochs}: {off:.0f} → {on:.0f} img/s with train.compile=true "
        f"({on / off:.2f}×); "
        f"test acc {runs['false']['test_acc']:.3f} / {runs['true']['test_acc']:.3f}"
    )
    return row


ROW_FUNCTIONS = {
    "environment": environment,
    "data": data,
    "resume": resume,
    "packed": packed,
    "formats": formats,
    "sigusr1": sigusr1,
    "compile": compile_row,
}


if __name__ == "__main__":
    sys.exit(main())
