"""One rank of a distributed evaluation (``cohort eval --distributed`` starts K×R of them):

    python -m cohort.evaluate.worker RUN_DIR [--checkpoint C] [--split S] [--data D] [--replicas R]

under torchrun or srun. Each rank loads only its member's part of the checkpoint on its own
device (placement, bf16 and channels_last as in training), predicts its replica's shard, and
rank 0 writes what the one-process ``cohort eval`` writes (``cohort.evaluate.checkpoint_eval.write_eval``).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from cohort.data.batch import device_formats
from cohort.data.loader import MemberLoader
from cohort.dist.mesh import Launch, detect_launch, join_cohort
from cohort.errors import CohortError
from cohort.evaluate.checkpoint_eval import write_eval
from cohort.evaluate.predict import cohort_logits
from cohort.preflight import EvalPlan, plan_eval
from cohort.run import checkpoint_files


def evaluate_rank(plan: EvalPlan, launch: Launch) -> None:
    """This rank's part of a distributed evaluation; rank 0 writes the results."""
    config = plan.config
    mesh = join_cohort(config, launch, plan.replicas)
    try:
        member = config.members[mesh.member]
        net = checkpoint_files.load_model(
            plan.folder,
            mesh.member,
            member.arch,
            plan.meta,
            mesh.device,
            blurpool=member.blurpool,
            batch_ensemble=member.batch_ensemble,
            fix="pick another checkpoint with --checkpoint",
        )
        autocast, channels_last = device_formats(config.train.bf16, config.train.channels_last, mesh.device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        logits, labels = {}, {}
        for name, path in plan.betons.items():
            loader = MemberLoader.for_evaluation(config, path, mesh.member, mesh.replica, plan.replicas, mesh.device)
            logits[name], labels[name] = cohort_logits(
                net,
                loader,
                mesh,
                config.train.flip_tta,
                autocast,
                channels_last,
                config.ensemble_sizes,
            )
        # Every rank waits for rank 0's files: a full disk there stops them all with its one line.
        mesh.main_does(lambda: write_eval(plan, logits, labels))
    finally:
        mesh.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cohort.evaluate.worker")
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--data")
    parser.add_argument("--replicas", type=int)
    args = parser.parse_args(argv)
    launch = detect_launch()
    try:
        evaluate_rank(plan_eval(args.run_dir, args.checkpoint, args.split, args.data, args.replicas), launch)
    except CohortError as error:
        # Every rank meets these alike: rank 0 says it once; the others wait so that
        # torchrun does not stop rank 0 before it has.
        if launch.rank == 0:
            print(f"cohort: error: {error}", file=sys.stderr, flush=True)
        else:
            time.sleep(2.0)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
