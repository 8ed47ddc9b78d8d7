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


class DiffDMLBottleneck(torch.nn.Module):
    """Luminova1996/Diff-DML model/resnet.py ``Bottleneck`` (L47-82), transcribed for this test only
    (its ``init_zero`` option, off in its ResNet, left out)."""

    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        nn, F = torch.nn, torch.nn.functional
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )
        self.relu = F.relu

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.shortcut(x)
        return self.relu(out)


class DiffDMLResNet(torch.nn.Module):
    """Its ``ResNet`` (L95-126) as ``resnet50`` builds it (L276-278: Bottleneck, [3, 4, 6, 3], temp 1)."""

    def __init__(self, num_blocks=(3, 4, 6, 3), num_classes=100):
        super().__init__()
        nn = torch.nn
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.fc = nn.Linear(512 * DiffDMLBottleneck.expansion, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for block_stride in [stride] + [1] * (num_blocks - 1):  # its loop reuses the name stride
            layers.append(DiffDMLBottleneck(self.in_planes, planes, block_stride))
            self.in_planes = planes * DiffDMLBottleneck.expansion
        return torch.nn.Sequential(*layers)

    def forward(self, x):
        F = torch.nn.functional
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).view(x.size(0), -1)
        return self.fc(out) / 1.0


def test_resnet50_is_diffdmls_cifar_resnet50_layer_for_layer():
    torch.manual_seed(0)
    official = DiffDMLResNet().eval()
    ours = build_model("resnet50", 100, [0.0] * 3, [1.0] * 3)[1].eval()  # behind Normalize (identity here)
    theirs, mine = official.state_dict(), ours.state_dict()
    assert [t.shape for t in theirs.values()] == [t.shape for t in mine.values()]  # in the same order
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in official.parameters()) == 23_705_252
    with torch.no_grad():  # their weights and (drawn) BatchNorm statistics in ours: the same function
        for name, value in theirs.items():
            if name.endswith("running_mean"):
                value.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                value.uniform_(0.5, 1.5)
        ours.load_state_dict(dict(zip(mine, theirs.values())))
        x = torch.rand(2, 3, 32, 32)
        assert torch.allclose(ours(x), official(x), rtol=1e-5, atol=1e-5)
    tv = build_model("tv.resnet50", 100, [0.0] * 3, [1.0] * 3)[1]  # ImageNet's stem: not this network
    assert [t.shape for t in tv.state_dict().values()] != [t.shape for t in mine.values()]
