"""An epoch's figures: term means over the steps taken, a resumed epoch's sums carried on."""

from types import SimpleNamespace

import torch

from cohort.config import CohortConfig
from cohort.data.batch import Batch
from cohort.train.epoch_meter import EPOCH_STATS, EpochMeter

BATCH = Batch(torch.zeros(2, 1, 1, 1, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), torch.arange(2), 2)


# The two facts of the rank's mesh the meter reads (no process group needed): not rank 0, so no bar.
RANK = SimpleNamespace(is_main=False, world_size=1)


def meter(start_batch=0, resumed=None):
    config = CohortConfig()
    config.data.batch_size = 2
    return EpochMeter(config, RANK, ["ce"], epoch=0, start_batch=start_batch, steps_per_epoch=4, resumed=resumed)


def test_means_cover_the_steps_taken_and_skipped_steps_count_apart():
    m = meter()
    for ce in (1.0, None, 3.0):
        m.add(None if ce is None else {"ce": torch.tensor(ce), "loss": torch.tensor(2 * ce)}, BATCH)
    stats = m.close(lr=0.1, exchange_seconds=0.5)
    assert stats["ce"] == 2.0 and stats["loss"] == 4.0 and stats["steps"] == 3
    assert stats["skipped_steps"] == 1 and stats["lr"] == 0.1 and stats["exchange_seconds"] == 0.5
    assert set(EPOCH_STATS) <= set(stats)


def test_a_resumed_epoch_carries_its_sums_on_and_a_fresh_one_ignores_them():
    first = meter()
    first.add({"ce": torch.tensor(1.0), "loss": torch.tensor(1.0)}, BATCH)
    saved = first.state()
    resumed = meter(start_batch=1, resumed=saved)
    resumed.add({"ce": torch.tensor(3.0), "loss": torch.tensor(3.0)}, BATCH)
    assert resumed.close(lr=0.1, exchange_seconds=0.0)["ce"] == 2.0  # (1 + 3) / 2 steps
    assert meter(start_batch=0, resumed=saved).sums == {"ce": 0.0, "loss": 0.0}
