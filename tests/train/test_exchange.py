"""The logit exchange between two real processes on gloo."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cohort.train.exchange import DesyncError, LogitExchange, NonFiniteError


def _exchange_worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        exchange = LogitExchange(None, rank, 2)
        logits = torch.full((3, 4), float(rank))
        indices = torch.tensor([0, 1, 2**31 - 1])  # int32 bits travel exactly, even past float32's 2^24
        gathered = exchange.gather(logits, indices, step=0)
        results[f"peers{rank}"] = exchange.peers(gathered).tolist()
        try:  # member 1 reads a different batch at step 7 (one index off, beyond float32's exact range)
            exchange.gather(logits, indices - int(rank == 1), step=7)
        except DesyncError as error:
            results[f"desync{rank}"] = str(error)
        try:  # member 0's logits overflow at step 9
            exchange.gather(logits if rank else logits * float("inf") + 1, indices, step=9)
        except NonFiniteError as error:
            results[f"nonfinite{rank}"] = str(error)
    finally:
        dist.destroy_process_group()


def test_peers_desync_and_non_finite_logits_across_two_processes(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_exchange_worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
        results = dict(results)
    assert results["peers0"] == [[[1.0] * 4] * 3] and results["peers1"] == [[[0.0] * 4] * 3]
    for rank in (0, 1):
        assert results[f"desync{rank}"] == (
            "member 1 trained on different samples than member 0 at step 7; the cohort's loaders are out of step"
        )
        assert results[f"nonfinite{rank}"].startswith("member 0 produced non-finite logits at step 9")
