"""The member loader's batches: sample indices from the cohort order, uint8 images."""

import numpy as np
import pytest
import torch
from ffcv.reader import Reader

from cohort.data.batch import IGNORE_LABEL, model_input
from cohort.data.labelled import choose_labelled, train_labels
from cohort.data.loader import MemberLoader


@pytest.mark.parametrize("page_window", [0, 2], ids=["shuffle", "page_local"])
def test_each_batch_carries_the_indices_of_its_samples(digits_root, page_window):
    loader = MemberLoader(
        digits_root,
        "train",
        member=0,
        replica=1,
        replicas=2,
        seed=3,
        policy="none",
        batch_size=32,
        num_workers=1,
        device=torch.device("cpu"),
        train=True,
        page_window=page_window,
    )
    reader = Reader(str(digits_root / "train.beton"))
    labels_on_disk = reader.metadata[f"f{reader.field_names.index('label')}"]
    order = loader.indices(2)
    seen = 0
    # Started mid-epoch, it still ends where a whole epoch ends (no trailing partial batch).
    for b, batch in enumerate(loader.epoch(2, start_batch=1), start=1):  # FFCV reuses buffers: check each now
        assert batch.images.dtype == torch.uint8 and batch.anchors == len(batch.labels) == 32
        np.testing.assert_array_equal(batch.indices.numpy(), order[b * 32 : (b + 1) * 32])
        np.testing.assert_array_equal(batch.labels.numpy(), labels_on_disk[batch.indices.numpy()])
        seen += 1
    assert seen == len(loader) - 1


def test_model_input_scales_to_the_unit_interval():
    images = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)
    x = model_input(images)
    assert x.dtype == torch.float32 and x.flatten().tolist() == [0.0, torch.tensor(51 / 255).item(), 1.0]
    assert model_input(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), channels_last=True).is_contiguous(
        memory_format=torch.channels_last
    )


def test_members_on_one_view_stream_see_identical_images_and_others_do_not(digits_root):
    def first_batch(member, view_stream):
        loader = MemberLoader(
            digits_root,
            "train",
            member=member,
            replica=0,
            replicas=1,
            seed=0,
            policy="crop",
            batch_size=64,
            num_workers=1,
            device=torch.device("cpu"),
            train=True,
            view_stream=view_stream,
        )
        batch = next(iter(loader.epoch(1)))
        return batch.indices.clone(), batch.images.clone()

    indices, member0 = first_batch(0, 0)
    shared_indices, shared = first_batch(1, 0)  # views: shared: member 1 uses member 0's draws
    own_indices, own = first_batch(1, 1)  # views: own
    assert torch.equal(indices, shared_indices) and torch.equal(indices, own_indices)
    assert torch.equal(member0, shared)
    differing = (member0 != own).flatten(1).any(1).float().mean().item()
    assert differing > 0.5  # crop shifts by up to 4 px each way: most samples get another shift


def test_hidden_labels_never_leave_the_loader_and_partners_share_their_anchors_class(digits_root):
    labels_on_disk = train_labels(digits_root)
    labelled = choose_labelled(labels_on_disk, 0.1, seed=0)
    loader = MemberLoader(
        digits_root,
        "train",
        member=0,
        replica=0,
        replicas=1,
        seed=3,
        policy="crop",
        batch_size=16,
        num_workers=1,
        device=torch.device("cpu"),
        train=True,
        labelled=labelled,
        partners=True,
    )
    steps, order = 0, loader.indices(1)
    # Started mid-epoch (as a resume does), it reads the same anchors and partners as the whole epoch.
    for b, batch in enumerate(loader.epoch(1, start_batch=len(loader) - 3), start=len(loader) - 3):
        indices = batch.indices.numpy()
        assert batch.anchors == 16 and len(indices) == 32
        np.testing.assert_array_equal(indices, order[b * 32 : (b + 1) * 32])
        # Partners share their anchor's class; labels show only for the labelled samples.
        np.testing.assert_array_equal(labels_on_disk[indices[16:]], labels_on_disk[indices[:16]])
        shown = np.isin(indices, labelled)
        np.testing.assert_array_equal(batch.labels.numpy()[shown], labels_on_disk[indices[shown]])
        assert (batch.labels.numpy()[~shown] == IGNORE_LABEL).all()
        steps += 1
    assert steps == 3 and len(loader) == len(labels_on_disk) // 16
    independent = MemberLoader(
        digits_root,
        "train",
        member=0,
        replica=0,
        replicas=1,
        seed=3,
        policy="none",
        batch_size=16,
        num_workers=1,
        device=torch.device("cpu"),
        train=True,
        labelled=labelled,
        labelled_only=True,
    )
    read = np.concatenate([batch.indices.numpy() for batch in independent.epoch(0)])
    assert set(read) <= set(labelled) and len(read) == len(labelled) // 16 * 16


def test_an_evaluation_batch_is_at_most_the_replicas_shard(digits_root, tmp_path):
    from cohort.config import load_config
    from tests.conftest import tiny_config

    def batches(eval_batch_size: int):
        config = load_config(tiny_config(tmp_path, digits_root), [f"data.eval_batch_size={eval_batch_size}"])
        loader = MemberLoader.for_evaluation(config, digits_root / "val.beton", 0, 1, 2, torch.device("cpu"))
        return loader.loader.batch_size, [(b.images.clone(), b.indices.clone()) for b in loader.epoch(0)]

    huge, whole = batches(10**9), batches(256)
    assert huge[0] == 90 and whole[0] == 90  # 180 validation samples over 2 replicas: 90 each
    assert len(huge[1]) == len(whole[1]) == 1
    assert torch.equal(huge[1][0][0], whole[1][0][0]) and torch.equal(huge[1][0][1], whole[1][0][1])


def test_the_shipped_semi10_config_at_seed_5_meets_a_batch_with_no_label_and_still_trains(digits_root):
    from cohort.config import load_config
    from cohort.data.labelled import check_labelled
    from cohort.train.objective import LossInputs, build_objective
    from tests.conftest import REPO

    config = load_config(REPO / "configs" / "digits_semi10_dml.yaml", ["seed=5", f"data.root={digits_root}"])
    loader = MemberLoader.for_training(config, 0, 0, torch.device("cpu"), check_labelled(config))
    # The batches of the third epoch (index 2), as the loader hides their labels: batch 17 has none.
    batches = torch.from_numpy(loader.indices(2).astype(np.int64)).view(len(loader), -1)
    empty = loader.hidden[batches].all(1)
    assert torch.nonzero(empty).flatten().tolist() == [17]
    labels = torch.where(
        loader.hidden[batches[17]], IGNORE_LABEL, torch.from_numpy(train_labels(digits_root))[batches[17]]
    )
    assert (labels == IGNORE_LABEL).all()
    torch.manual_seed(0)
    own = torch.randn(len(labels), 10, requires_grad=True)
    loss, terms = build_objective(config, 0)(
        LossInputs(own, labels, progress=2.5, peers=torch.randn(1, len(labels), 10))
    )
    assert terms["ce"].item() == 0.0 and torch.isfinite(loss) and terms["mimicry"] > 0
    loss.backward()
    assert torch.isfinite(own.grad).all() and own.grad.abs().sum() > 0  # mimicry still trains on the batch
