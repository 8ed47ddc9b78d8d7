"""The ``cohort`` command: data, train, submit, status, eval, report, dee, study."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cohort.config import ConfigError, load_config
from cohort.data.folder import DataError
from cohort.dist.placement import PlacementError, place
from cohort.dist.stopping import INTERRUPTED_EXIT
from cohort.errors import CohortError
from cohort.preflight import plan_eval, plan_run
from cohort.run.files import make_folder
from cohort.run.hold import RunHold


def cmd_data(args: argparse.Namespace) -> int:
    from cohort.data import datasets, folder

    out = Path(args.out)
    if args.dataset == "verify":
        files, count, seconds = folder.verify_data(out)
        print(
            f"verified {out}: its {files} files ({folder.human_bytes(count)}, {count} bytes) match the "
            f"{folder.CHECKSUM} digests in meta.json; {seconds:.2f} s"
        )
        return 0
    # Proved creatable first, by the one function that makes folders: a path that cannot be
    # created (a symlink loop, /proc, a read-only disk) is one line, not the writer's traceback.
    make_folder(out, "--out", "choose another --out", DataError, keep=False)
    # Each writer has its own default val size; only the sizes given are passed on.
    sizes = {key: value for key in ("val_size", "train_size") if (value := getattr(args, key)) is not None}
    if args.val_from != "random":
        if args.dataset == "imagefolder":
            raise DataError(
                "--val-from last takes the training set's last images, but an image folder lists its images "
                "class by class, so they would all be of the last classes; use --val-from random"
            )
        sizes["val_from"] = args.val_from
    if args.dataset == "digits":
        meta = datasets.write_digits(out, size=args.size, **sizes)
    elif args.dataset == "fashion-mnist":
        meta = datasets.write_fashion_mnist(out, Path(args.source or datasets.FASHION_MNIST_DEBIAN), **sizes)
    elif args.dataset in ("cifar10", "cifar100"):
        meta = datasets.write_cifar(
            out,
            10 if args.dataset == "cifar10" else 100,
            Path(args.source or out / "download"),
            download=not args.no_download,
            **sizes,
        )
    else:
        if not (args.train_dir and args.test_dir):
            raise DataError("imagefolder needs --train-dir and --test-dir (e.g. ImageNet's train/ and val/)")
        meta = datasets.write_imagefolder(
            out,
            Path(args.train_dir),
            Path(args.test_dir),
            args.max_resolution,
            num_workers=args.workers,
            write_mode=args.write_mode,
            jpeg_quality=args.jpeg_quality,
            compress_probability=args.compress_probability,
            **sizes,
        )
    print(f"wrote {out}: {meta['sizes']} samples, {meta['num_classes']} classes")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cohort.launch.torchrun import launch_local

    config = load_config(args.config, args.overrides)
    # Checked here, before any process starts: in the workers each rank would report it.
    plan_run(config, write_data=True, local=True)
    check_local_gpus(config, config.replicas)
    with RunHold.acquire(config.run_dir, "cohort train") as hold, hold.for_children():
        return launch_local([args.config, *args.overrides], config.world_size, max_restarts=args.max_restarts)


def check_local_gpus(config, replicas: int) -> None:
    """Whether this machine's GPUs can hold the cohort's K × ``replicas`` ranks (on CUDA)."""
    import torch

    from cohort.dist.mesh import uses_cuda

    if uses_cuda(config.train.device):
        try:  # every rank runs on this node
            place(
                config.train.members_per_gpu,
                config.num_members,
                replicas,
                config.num_members * replicas,
                torch.cuda.device_count(),
            )
        except PlacementError as error:
            raise ConfigError(f"{error}, or a cluster launcher") from None


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        from cohort.launch.submit import main_submit
    except ImportError as error:
        if error.name != "submitit":
            raise
        raise ConfigError(
            "submitit is not installed; pip install submitit (bash scripts/setup.sh installs it)"
        ) from None
    return main_submit(args)


def cmd_status(args: argparse.Namespace) -> int:
    from cohort.run.status import run_status

    print(run_status(args.run_dir))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cohort.evaluate.checkpoint_eval import run_eval

    if args.replicas is not None and not args.distributed:
        raise ConfigError("--replicas splits a --distributed evaluation; add --distributed, or drop --replicas")
    # Checked before any process starts, as for training; the hold keeps a training run from
    # starting here (or resuming) while the evaluation writes eval/.
    plan = plan_eval(args.run_dir, args.checkpoint, args.split, args.data, args.replicas)
    if args.distributed:
        check_local_gpus(plan.config, plan.replicas)
    with RunHold.acquire(plan.run.path, "cohort eval") as hold:
        if not args.distributed:
            run_eval(plan)  # the plan checked above, not read again
            return 0
        with hold.for_children():
            return eval_distributed(args, plan)


def eval_distributed(args: argparse.Namespace, plan) -> int:
    """``cohort eval --distributed``: K×R ranks of ``cohort.evaluate.worker`` through torchrun."""
    from cohort.launch.torchrun import launch_local

    options = [
        "--checkpoint",
        args.checkpoint,
        "--split",
        args.split,
        "--replicas",
        str(plan.replicas),
        *(["--data", args.data] if args.data else []),
    ]
    return launch_local(
        [args.run_dir, *options], plan.config.num_members * plan.replicas, module="cohort.evaluate.worker"
    )


def cmd_report(args: argparse.Namespace) -> int:
    from cohort.evaluate.report import write_report

    write_report(args.run_dirs)
    return 0


def cmd_dee(args: argparse.Namespace) -> int:
    from cohort.evaluate.dee import run_dee

    run_dee(args.reference, args.run_dirs, args.temperature, args.rule)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from cohort.evaluate.study import StudyStopped, run_study
    from cohort.launch.torchrun import launch_local  # torch's launcher: imported when a study runs

    try:
        run_study(args.configs, args.seeds, args.out, args.set, launch_local)
    except StudyStopped as stop:
        print(f"cohort: {stop}", file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cohort", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser(
        "data", help="write train/val/test .beton files (or verify a written folder against its checksums)"
    )
    data.add_argument(
        "dataset",
        choices=["digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "verify"],
        help="the dataset to write; verify: read every file of --out and compare it with the sizes and "
        "SHA-256 digests its meta.json recorded when it was written",
    )
    data.add_argument("--out", required=True, help="folder for the .beton files and meta.json (verify: to check)")
    data.add_argument("--size", type=int, default=32, help="digits: side of the upscaled images")
    data.add_argument(
        "--source",
        help="cifar: folder holding (or to download) the python archive; fashion-mnist: folder of its four "
        "IDX files (default: Debian's /usr/share/datasets/fashion-mnist)",
    )
    data.add_argument(
        "--val-size",
        type=int,
        help="images carved from the training set for val (default: digits 12.5 %%, cifar 10 %%, "
        "imagefolder 2 %%, fashion-mnist 10000)",
    )
    data.add_argument(
        "--val-from",
        choices=["random", "last"],
        default="random",
        help="val: a fixed random draw from the training set (default), or its last images in file order "
        "(Diff-DML's code: CIFAR's last 5,000 with --val-size 5000)",
    )
    data.add_argument(
        "--train-size", type=int, help="keep a class-balanced subset of this many training images (after val)"
    )
    data.add_argument("--no-download", action="store_true", help="cifar: fail instead of downloading")
    data.add_argument("--train-dir", help="imagefolder: training images, one folder per class")
    data.add_argument("--test-dir", help="imagefolder: test images (ImageNet's val), one folder per class")
    data.add_argument("--max-resolution", type=int, default=256, help="imagefolder: longest side stored")
    data.add_argument("--workers", type=int, default=4, help="imagefolder: writer processes")
    data.add_argument(
        "--write-mode",
        choices=["jpg", "raw", "proportion"],
        default="jpg",
        help="imagefolder: store JPEG, raw pixels, or JPEG with --compress-probability (ffcv-imagenet)",
    )
    data.add_argument("--jpeg-quality", type=int, default=90, help="imagefolder: JPEG quality")
    data.add_argument(
        "--compress-probability",
        type=float,
        default=0.5,
        help="imagefolder, --write-mode proportion: the fraction of images stored as JPEG",
    )
    data.set_defaults(run=cmd_data)

    train = sub.add_parser("train", help="train a cohort locally (K×R processes through torchrun)")
    train.add_argument("config", help="YAML config, e.g. configs/demo.yaml")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.05 members.1.arch=resnet56")
    train.add_argument(
        "--max-restarts", type=int, default=0, help="torchrun restarts of the whole cohort after a failure"
    )
    train.set_defaults(run=cmd_train)

    submit = sub.add_parser("submit", help="train a cohort as a SLURM job (submitit; one task per rank)")
    submit.add_argument("config", help="YAML config, e.g. configs/cifar100_dml.yaml")
    submit.add_argument("overrides", nargs="*", help="key=value overrides (resume=auto is always added)")
    submit.add_argument("--nodes", type=int, default=1)
    submit.add_argument(
        "--gpus-per-node",
        type=int,
        required=True,
        help="GPUs (one task each) per node; with --cpu, CPU tasks per node. nodes × this = K×R",
    )
    submit.add_argument("--partition", required=True)
    submit.add_argument("--time", type=int, required=True, help="time limit of each job, minutes")
    submit.add_argument("--cpus-per-task", type=int, help="CPU cores per task (loader threads and torch)")
    submit.add_argument("--seeds", type=int, nargs="+", help="a job array: one cohort per seed, in RUN_DIR/seed<N>")
    submit.add_argument("--cpu", action="store_true", help="CPU tasks and gloo (CPU clusters, tests)")
    submit.add_argument(
        "--signal-delay-s",
        type=int,
        default=120,
        help="seconds before the time limit at which the ranks are told to save and requeue",
    )
    submit.add_argument(
        "--max-timeouts",
        type=int,
        default=10,
        help="requeues after hitting the time limit before the job gives up (preemptions do not count)",
    )
    submit.set_defaults(run=cmd_submit)

    status = sub.add_parser("status", help="where a run stands: its job, last epoch, last metrics")
    status.add_argument("run_dir")
    status.set_defaults(run=cmd_status)

    evaluate = sub.add_parser(
        "eval", help="evaluate a trained cohort's checkpoint (one process, or K×R with --distributed)"
    )
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--checkpoint", default="best", help="best (train.select_by's choice), last, or a folder")
    evaluate.add_argument("--split", default="test", choices=["test", "val"])
    evaluate.add_argument("--data", help="another .beton to evaluate on (from a `cohort data` folder)")
    evaluate.add_argument(
        "--distributed",
        action="store_true",
        help="one process per member replica, as in training (members too large for one device)",
    )
    evaluate.add_argument(
        "--replicas",
        type=int,
        help="--distributed: replicas per member, each predicting a shard (default: the run's R)",
    )
    evaluate.set_defaults(run=cmd_eval)

    report = sub.add_parser("report", help="markdown table and figures comparing finished runs")
    report.add_argument("run_dirs", nargs="+", help="run directories; report.md and PNGs go into the first")
    report.set_defaults(run=cmd_report)

    dee = sub.add_parser("dee", help="deep-ensemble equivalent of runs against an independent reference run")
    dee.add_argument(
        "--reference", required=True, help="run directory of an independent cohort (loss.mimicry.weight: 0)"
    )
    dee.add_argument(
        "--temperature",
        choices=["val", "test-cv"],
        default="val",
        help="calibrated NLL with the temperature fitted on val (default), or by 2-fold cross-validation "
        "on test repeated 5 times (the official DEE protocol, Ashukha et al. 2020)",
    )
    dee.add_argument(
        "--rule",
        choices=["official", "running-min"],
        default="official",
        help="read the reference curve as the official notebook's dee() does (default), or after making it "
        "monotone (running minimum); they differ only on a curve that is not monotone",
    )
    dee.add_argument("run_dirs", nargs="+")
    dee.set_defaults(run=cmd_dee)

    study = sub.add_parser("study", help="train several configs over several seeds and tabulate them")
    study.add_argument("configs", nargs="+", help="YAML configs, each with its own name")
    study.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    study.add_argument("--out", default="runs/study", help="folder for the runs and study.md")
    study.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every config")
    study.set_defaults(run=cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # argparse takes key=value overrides only before the first option; accept them after it too
    # (`cohort submit CONFIG --nodes 1 ... optim.lr=0.1`).
    if rest and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in rest):
        args.overrides += rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args)
    except CohortError as error:
        print(f"cohort: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the launcher's own handling (cohort.launch.torchrun)
        print(f"cohort: interrupted (Ctrl-C) during `cohort {args.command}`; no run started", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
