import pytest
import torch

from cohort.models import ARCHITECTURES, build_model, is_known_architecture


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20", "resnet32", "resnet56", "resnet110", "wrn16_2", "resnet18",
                                  "mobilenetv2", "tv.resnet18"])
def test_models_map_cifar_images_to_class_logits(arch):
    model = build_model(arch, 7, [0.5] * 3, [0.25] * 3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_resnet32_has_the_papers_size():
    n = sum(p.numel() for p in build_model("resnet32", 100, [0] * 3, [1] * 3).parameters())
    assert 0.46e6 < n < 0.48e6  # ResNet-32 for CIFAR-100: ~0.47 M parameters


def test_normalisation_is_the_first_layer():
    model = build_model("small_cnn", 10, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert torch.equal(model[0](torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))


def test_names():
    assert is_known_architecture("wrn40_4") and is_known_architecture("tv.mobilenet_v3_small")
    assert not is_known_architecture("resnet33") and not is_known_architecture("tv.nope")
    assert "resnet34" in ARCHITECTURES and "wrn28_10" in ARCHITECTURES
