"""Codistillation's copies, in process: a fresh copy predicts a shared batch exactly as its peer
does (so a step right after a refresh is DML's step), its dropout is off, and a checkpoint's
snapshots rebuild the copies. The refresh's broadcast and an exact resume across a real kill
point are ``tests/scenarios/test_codistill.py``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cohort.config import CohortConfig, MemberConfig
from cohort.models import member_network
from cohort.run.checkpoint_files import checkpoint_dir
from cohort.train.codistill import PeerCopies, as_copy, flat_parameters, load_flat
from cohort.train.losses import mimicry_loss

META = {"num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3}


def cohort(*archs: str) -> CohortConfig:
    config = CohortConfig(members=[MemberConfig(arch=arch) for arch in archs])
    config.exchange.mode = "codistill"
    return config


def trained(config: CohortConfig, member: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = member_network(config, member, META)
    with torch.no_grad():  # move its BatchNorm statistics off their start, as training does
        net.train()(torch.rand(8, 3, 32, 32))
    return net


@pytest.mark.parametrize("arch", ["small_cnn", "mobilenetv2"])  # BatchNorm; BatchNorm and dropout
def test_a_fresh_copy_predicts_a_shared_batch_as_its_peer_does_in_training(arch):
    config = cohort(arch, arch)
    peer = trained(config, 1, seed=1)
    copy = as_copy(member_network(config, 1, META))
    load_flat(copy, flat_parameters(peer))
    x = torch.rand(16, 3, 32, 32)
    for module in peer.modules():  # the peer's own training forward, its dropout aside
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        assert torch.equal(copy(x), peer.train()(x))
    assert copy.training and not any(p.requires_grad for p in copy.parameters())
    assert all(not m.training for m in copy.modules() if isinstance(m, torch.nn.Dropout))
    # So the mimicry term, and its gradient, are DML's (peers detached either way).
    own = trained(config, 0, seed=0)
    logits = own.train()(x)
    loss_copy = mimicry_loss(logits, copy(x).unsqueeze(0).detach())
    loss_dml = mimicry_loss(logits, peer(x).unsqueeze(0).detach())
    assert torch.equal(loss_copy, loss_dml)


def test_a_copy_draws_nothing_from_the_ranks_generator():
    config = cohort("small_cnn", "resnet20")
    net = member_network(config, 0, META)
    mesh = SimpleNamespace(member=0, members=2, device=torch.device("cpu"))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    PeerCopies(config, mesh, net, META)
    assert torch.equal(torch.rand(4), expected)


def test_the_snapshots_in_a_checkpoint_rebuild_the_copies(tmp_path):
    config = cohort("small_cnn", "resnet20", "small_cnn")
    nets = [trained(config, m, seed=m) for m in range(3)]
    folder = checkpoint_dir(tmp_path, 9)
    folder.mkdir(parents=True)
    for m, net in enumerate(nets):
        snapshot = {"refreshed_at": 8, "snapshot": flat_parameters(net)}
        torch.save({"inputs": {"peers": snapshot}, "model": net.state_dict()}, folder / f"member-{m}.pt")
    mesh = SimpleNamespace(member=1, members=3, device=torch.device("cpu"))
    copies = PeerCopies(config, mesh, nets[1], META)
    assert not copies.ready and copies.state_dict() is None
    own = torch.load(folder / "member-1.pt", weights_only=False)["inputs"]["peers"]
    assert copies.load_state_dict(own, folder) == ""
    assert copies.ready and copies.refreshed_at == 8 and sorted(copies.copies) == [0, 2]
    for j in (0, 2):
        assert torch.equal(flat_parameters(copies.copies[j]), flat_parameters(nets[j]))
    assert torch.equal(copies.state_dict()["snapshot"], flat_parameters(nets[1]))
    # A peer's part from another refresh cannot rebuild this one's copies: one line naming it.
    stale = {"refreshed_at": 5, "snapshot": flat_parameters(nets[2])}
    torch.save({"inputs": {"peers": stale}}, folder / "member-2.pt")
    problem = copies.load_state_dict(own, folder)
    assert problem.startswith(f"{folder}/member-2.pt holds no parameters of member 2 as refreshed at step 8")
    assert not copies.ready
