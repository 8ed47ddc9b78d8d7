import pytest
import torch

from cohort.models import ARCHITECTURES, build_model, is_known_architecture


@pytest.mark.parametrize(
    "arch",
    [
        "small_cnn",
        "resnet20",
        "resnet32",
        "resnet56",
        "resnet110",
        "wrn16_2",
        "resnet18",
        "preact_resnet18",
        "resnet56_bottleneck",
        "mobilenetv2",
        "tv.resnet18",
    ],
)
def test_models_map_cifar_images_to_class_logits(arch):
    model = build_model(arch, 7, [0.5] * 3, [0.25] * 3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_resnet32_has_the_papers_size():
    n = sum(p.numel() for p in build_model("resnet32", 100, [0] * 3, [1] * 3).parameters())
    assert 0.46e6 < n < 0.48e6  # ResNet-32 for CIFAR-100: ~0.47 M parameters


@pytest.mark.parametrize(
    "arch, official",
    [
        # Counted on the official networks for 100 classes (alinlab/cs-kd models/resnet.py CIFAR_ResNet18;
        # mdca-loss/MDCA-Calibration models/resnet.py resnet56): parameters, Conv2d and BatchNorm2d layers,
        # BatchNorm channels summed.
        ("preact_resnet18", (11_217_444, 20, 17, 3456)),
        ("resnet56_bottleneck", (614_452, 58, 58, 4496)),
    ],
)
def test_the_official_codes_networks_have_their_size_and_layers(arch, official):
    net = build_model(arch, 100, [0.5] * 3, [0.25] * 3)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (
        sum(p.numel() for p in net.parameters()),
        len(convs),
        len(norms),
        sum(m.num_features for m in norms),
    ) == official
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_cohorts_resnet18_and_resnet56_are_not_the_official_variants():
    sizes = {
        a: sum(p.numel() for p in build_model(a, 100, [0] * 3, [1] * 3).parameters()) for a in ("resnet18", "resnet56")
    }
    assert sizes["resnet18"] != 11_217_444 and sizes["resnet56"] != 614_452


def test_preact_blocks_shortcut_carries_the_preactivated_input_as_cs_kds():
    from cohort.models.official_resnets import PreActBlock

    torch.manual_seed(0)
    block = PreActBlock(8, 8, 1).eval()
    with torch.no_grad():
        block.bn1.running_mean.normal_()
        block.conv2.weight.zero_()  # the residual branch is now 0: the block is its shortcut
        x = torch.randn(2, 8, 6, 6)
        assert torch.allclose(block(x), torch.relu(block.bn1(x)))  # He et al.'s identity would give x


def test_normalisation_is_the_first_layer():
    model = build_model("small_cnn", 10, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert torch.equal(model[0](torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))


def test_names():
    assert is_known_architecture("wrn40_4") and is_known_architecture("tv.mobilenet_v3_small")
    assert not is_known_architecture("resnet33") and not is_known_architecture("tv.nope")
    assert "resnet34" in ARCHITECTURES and "wrn28_10" in ARCHITECTURES


def test_blurpool_blurs_before_every_strided_convolution_of_16_channels_or_more():
    import torch.nn.functional as F

    from cohort.models import BlurPoolConv2d

    torch.manual_seed(0)
    plain = build_model("tv.resnet18", 10, [0.5] * 3, [0.25] * 3)
    torch.manual_seed(0)
    blurred = build_model("tv.resnet18", 10, [0.5] * 3, [0.25] * 3, blurpool=True)
    wrapped = [m for m in blurred.modules() if isinstance(m, BlurPoolConv2d)]
    # ResNet-18: conv1 of layers 2–4's first blocks and their 1×1 downsamples; not the 3-channel stem.
    assert len(wrapped) == 6 and not isinstance(blurred[1].conv1, BlurPoolConv2d)
    conv = wrapped[0].conv
    x = torch.randn(2, conv.in_channels, 8, 8)
    kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    expected = conv(F.conv2d(x, kernel.expand(conv.in_channels, 1, 3, 3), padding=1, groups=conv.in_channels))
    assert torch.allclose(wrapped[0](x), expected, atol=1e-6)
    assert blurred(torch.rand(2, 3, 64, 64)).shape == plain(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_flip_test_time_augmentation_averages_the_logits_of_the_mirror():
    from cohort.data.batch import evaluation_logits

    torch.manual_seed(0)
    net = build_model("small_cnn", 10, [0.5] * 3, [0.25] * 3).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(evaluation_logits(net, x), net(x))
        both = evaluation_logits(net, x, flip_tta=True)
        assert torch.allclose(both, (net(x) + net(x.flip(3))) / 2)
        assert torch.allclose(evaluation_logits(net, x.flip(3), flip_tta=True), both, atol=1e-6)
