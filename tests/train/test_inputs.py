"""The objective's inputs by need: which providers a cohort runs, in which order, and what the
partners' provider computes (the exchange is tested in tests/train/test_exchange.py and by every
multi-process run, the teachers' x′ in tests/train/test_teachers.py); no process needed."""

import copy

import torch
from torch import nn

from cohort.config import LossConfig, load_config
from cohort.data.batch import Batch
from cohort.train.inputs import PROVIDERS, Partners, StepView
from tests.conftest import tiny_config


def test_every_need_a_term_declares_has_a_provider_in_a_fixed_order():
    declared = {need for term in LossConfig().terms().values() for need in term.NEEDS}
    assert declared == set(PROVIDERS) == {"peers", "partners", "teachers"}
    # The step runs them in this order: each train-mode forward moves BatchNorm's statistics.
    assert list(PROVIDERS) == ["teachers", "peers", "partners"]


def test_the_cohorts_needs_are_every_members(tmp_path, digits_root):
    path = tiny_config(tmp_path, digits_root)
    assert load_config(path, ["loss.mimicry.weight=0"]).cohort_needs == set()
    # Member 0 alone reads its peers, member 1 alone its partners: the cohort needs both.
    mixed = load_config(path, ["loss.cskd.weight=1", "members.0.loss.cskd=0", "members.1.loss.mimicry=0"])
    assert mixed.needs(0) == {"peers"} and mixed.needs(1) == {"partners"}
    assert mixed.cohort_needs == {"peers", "partners"}


class Runtime:
    """The two runtime objects the partners' provider reads."""

    def __init__(self, net):
        self.net, self.autocast = net, torch.autocast("cpu", enabled=False)


def test_partners_are_a_train_mode_forward_without_gradient_after_the_anchors():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).train()
    reference = copy.deepcopy(net)
    images = torch.rand(8, 3, 2, 2)
    pairs = Batch(torch.zeros(8, 3, 2, 2, dtype=torch.uint8), torch.zeros(8, dtype=torch.long), torch.arange(8), 4)
    partners = Partners(None, Runtime(net))(StepView(pairs, images, torch.zeros(4, 3), step=0))["partners"]
    with torch.no_grad():
        expected = reference(images[4:])  # alinlab/cs-kd: the partners' own train-mode forward
    assert torch.equal(partners, expected) and not partners.requires_grad
    assert torch.equal(net[2].running_mean, reference[2].running_mean)  # BatchNorm moved, as there
    plain = Batch(pairs.images[:4], pairs.labels[:4], pairs.indices[:4], 4)
    assert Partners(None, Runtime(net))(StepView(plain, images[:4], torch.zeros(4, 3), step=0)) == {"partners": None}
