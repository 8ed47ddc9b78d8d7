import re

import pytest
import yaml

from cohort.config import CohortConfig, ConfigError, apply_override, dump_config, load_config
from cohort.config.names import auto_policies
from cohort.config.tree import build, config_to_dict
from tests.conftest import REPO


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_demo_config_loads_and_resolves_member_names():
    config = load_config(REPO / "configs" / "demo.yaml")
    assert config.num_members == 3 and config.world_size == 3
    assert [m.name for m in config.members] == ["crop-a", "crop-b", "plain"]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert config.name and config.enabled_terms(0)


def test_the_method_configs_hold_their_papers_settings():
    cskd = load_config(REPO / "configs" / "cifar100_cskd_resnet18.yaml")
    assert cskd.enabled_terms(0) == {"ce": 1.0, "cskd": 1.0} and cskd.loss.cskd.temperature == 4.0
    assert (cskd.data.batch_size, cskd.optim.weight_decay, cskd.schedule.milestones) == (128, 1e-4, [100, 150])
    assert cskd.members[0].arch == "preact_resnet18"  # alinlab/cs-kd's CIFAR_ResNet18 is pre-activation
    mdca = load_config(REPO / "configs" / "cifar100_mdca_resnet56.yaml")
    assert mdca.enabled_terms(0) == {"focal": 1.0, "mdca": 1.0} and mdca.loss.focal.gamma == 1.0
    assert (mdca.members[0].arch, mdca.train.epochs, mdca.schedule.milestones) == (
        "resnet56_bottleneck",
        160,
        [80, 120],
    )
    for fraction in ("10", "30"):
        dml, twin = (
            load_config(REPO / "configs" / f"digits_semi{fraction}_{kind}.yaml") for kind in ("dml", "independent")
        )
        assert dml.trains_on_unlabelled and not twin.trains_on_unlabelled
        assert dml.data.labelled_fraction == twin.data.labelled_fraction == int(fraction) / 100
    for perturbation in ("kd", "gaussian", "ods", "confods"):
        student = load_config(REPO / "configs" / f"digits_distill_{perturbation}.yaml")
        assert student.enabled_terms(0) == {"ce": 0.1, "distill": 0.9} and student.loss.distill.temperature == 4.0
        assert student.teacher.perturbation == {"kd": "none"}.get(perturbation, perturbation)
        assert student.teacher.step_size == 1.0 and {student.view_stream(m) for m in range(4)} == {0}
    # Nam et al. 2021: (α, T) = (0.9, 1) on CIFAR-100, as the official README's commands; (0.9, 4) on CIFAR-10.
    for name, temperature in (("cifar100_distill_wrn28_10", 1.0), ("cifar10_distill_resnet32", 4.0)):
        student = load_config(REPO / "configs" / f"{name}.yaml")
        assert student.enabled_terms(0) == {"ce": 0.1, "distill": 0.9}
        assert student.loss.distill.temperature == temperature, name


def test_the_mdca_configs_commands_for_its_baselines_hold_the_official_settings():
    # mdca-loss/MDCA-Calibration scripts/cifar10.sh: focal loss alone with --gamma 3.0, FL + MDCA with --gamma 1.0.
    path = REPO / "configs" / "cifar100_mdca_resnet56.yaml"
    commands = [line.split("cohort train ", 1)[1] for line in path.read_text().splitlines() if "cohort train " in line]
    (focal_alone,) = [c for c in commands if c.endswith("# focal alone")]
    config_path, *overrides = focal_alone.split("#")[0].split()
    focal = load_config(REPO / config_path, overrides)
    assert focal.enabled_terms(0) == {"focal": 1.0} and focal.loss.focal.gamma == 3.0
    assert load_config(path).loss.focal.gamma == 1.0  # FL + MDCA


def test_the_distillation_configs_hold_the_official_recipes():
    # cs-giung/giung2 projects/Diversity-Matters: C100_WRN28x10_SGD.yaml (the DE-4 teachers the README trains),
    # C100_WRN28x10_BE4.yaml (students), C10_R32_{SGD,BE4}.yaml (commit 33196a0); train_student.py keeps the
    # epoch of best validation accuracy.
    recipes = {
        # config: (batch, lr, nesterov, weight decay, epochs, milestones, select_by)
        "cifar100_de4_wrn28_10": (256, 0.2, False, 5e-4, 300, [5, 150, 270], "val_members_acc"),
        "cifar100_distill_wrn28_10": (64, 0.05, False, 5e-4, 300, [5, 150, 270], "val_members_acc"),
        "cifar10_de4_resnet32": (512, 0.4, False, 4e-4, 200, [5, 100, 180], "val_members_acc"),
        "cifar10_de8_resnet32": (512, 0.4, False, 4e-4, 200, [5, 100, 180], "val_members_acc"),
        "cifar10_distill_resnet32": (128, 0.1, False, 4e-4, 250, [5, 125, 225], "val_members_acc"),
        "cifar100_distill_wrn28_10_be4": (64, 0.05, False, 5e-4, 300, [5, 150, 270], "val_members_acc"),
        "cifar10_distill_resnet32_be4": (128, 0.1, False, 4e-4, 250, [5, 125, 225], "val_members_acc"),
        "cifar10_distill_resnet32_be8": (128, 0.1, False, 4e-4, 250, [5, 125, 225], "val_members_acc"),
    }
    # The BatchEnsemble students: ENSEMBLE_SIZE, BASE_LR_BE / BASE_LR, WEIGHT_DECAY_BE, factors N(1, 0.5), T.
    students = {
        "cifar100_distill_wrn28_10_be4": (4, 0.5, 5e-4, 1.0),
        "cifar10_distill_resnet32_be4": (4, 0.5, 0.0, 4.0),
        "cifar10_distill_resnet32_be8": (8, 0.5, 0.0, 4.0),
    }
    for name, (n, lr_scale, decay, temperature) in students.items():
        c = load_config(REPO / "configs" / f"{name}.yaml")
        be = c.batch_ensemble
        assert [m.batch_ensemble for m in c.members] == [n] and c.teacher.resolved_mapping(n) == "one_to_one", name
        assert (be.fast_lr_scale, be.fast_weight_decay, be.init, be.init_std) == (lr_scale, decay, "normal", 0.5), name
        assert (c.loss.distill.weight, c.loss.distill.temperature) == (0.9, temperature), name
    for name, recipe in recipes.items():
        c = load_config(REPO / "configs" / f"{name}.yaml")
        got = (c.data.batch_size, c.optim.lr, c.optim.nesterov, c.optim.weight_decay, c.train.epochs)
        assert got + (c.schedule.milestones, c.train.select_by) == recipe, name
        assert (c.schedule.name, c.schedule.warmup_factor, c.schedule.gamma) == ("warmup_linear_decay", 0.01, 0.01)
        assert c.train.eval_every == 1, name  # the official validates every one of the last epochs


def test_the_diffdml_configs_hold_the_codes_recipe():
    # Luminova1996/Diff-DML train_align.sh (A resnet50, B resnet18, num_B 1, align weights 0.9, lr_B 0.01,
    # train_B 0, lr_B_decay 0, batch 100, baseline_acc 77.87), opts.py (350 epochs, acc_threshold 1,
    # ECE_bin 10), train.py L121-126 (SGD momentum 0.9, wd 5e-4, StepLR), dataset_utils/cifar.py L98-100
    # (step 50, gamma 0.1, begin 50), train_DTDP.sh (ResNet-34's baseline_acc 76.93).
    for name, (primary, a) in {
        "cifar100_diffdml_resnet50_resnet18": ("resnet50", 0.7787),
        "cifar100_diffdml_resnet34_resnet18": ("resnet34", 0.7693),
    }.items():
        c = load_config(REPO / "configs" / f"{name}.yaml")
        assert [m.arch for m in c.members] == [primary, "resnet18"] and c.reported == [0], name
        assert (c.data.batch_size, c.train.epochs, c.views, {m.policy for m in c.members}) == (
            100,
            350,
            "shared",
            {"standard"},
        )
        assert [c.member_optim(m).lr for m in (0, 1)] == [0.1, 0.01]
        assert {(o.momentum, o.weight_decay, o.nesterov) for o in map(c.member_optim, (0, 1))} == {(0.9, 5e-4, False)}
        s = c.member_schedule(0)
        assert (s.name, s.step_size, s.step_begin, s.gamma) == ("step_lr", 50, 50, 0.1)
        assert c.member_schedule(1).name == "constant"
        assert c.enabled_terms(0) == {"ce": 1.0, "mimicry": 0.9} and c.enabled_terms(1) == {"mimicry": 0.9}
        assert c.learns_from(0) is None and c.learns_from(1) == [0]
        t = c.train
        assert (t.select_by, t.baseline_acc, t.acc_threshold, t.calibration_bins, t.calibration_binning) == (
            "csmac",
            a,
            0.01,
            10,
            "floor",
        )
    # Every *_diffdml.yaml: a reported primary with CE and an auxiliary without, learning from it alone,
    # at a tenth of the primary's learning rate, constant.
    for path in sorted((REPO / "configs").glob("*_diffdml*.yaml")):
        c = load_config(path)
        if path.stem.endswith("_aug"):  # the summary's reading: every member alike, per-member augmentation
            assert c.views == "own" and c.loss.diversity.kind == "margin" and not c.reported, path.name
            continue
        assert c.reported == [0] and "ce" in c.enabled_terms(0), path.name
        for aux in range(1, c.num_members):
            assert "ce" not in c.enabled_terms(aux) and c.learns_from(aux) == [0], path.name
            assert c.member_optim(aux).lr == pytest.approx(c.member_optim(0).lr / 10), path.name
            assert c.member_schedule(aux).name == "constant", path.name


def test_the_summarys_reading_moved_and_its_old_name_says_where():
    with pytest.raises(ConfigError, match=r"cifar100_resnet34x3_diffdml\.yaml was renamed .*_diffdml_aug\.yaml"):
        load_config(REPO / "configs" / "cifar100_resnet34x3_diffdml.yaml")


def test_a_members_schedule_overrides_the_cohorts_as_its_optim_does(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "schedule: {name: step, milestones: [3], gamma: 0.5}\nmembers: [{}, {schedule: {name: constant}}]\n"
    )
    config = load_config(path)
    assert (config.member_schedule(0).name, config.member_schedule(0).milestones) == ("step", [3])
    assert (config.member_schedule(1).name, config.member_schedule(1).milestones) == ("constant", [3])
    path.write_text("members: [{}, {schedule: {name: step_lr}}]\n")
    with pytest.raises(ConfigError, match=r"^members\.1\.schedule: step_lr .*need step_size >= 1"):
        load_config(path)


@pytest.mark.parametrize("name", ["cifar100_dml.yaml", "cifar100_independent.yaml"])
def test_shipped_cifar_configs_load(name):
    config = load_config(REPO / "configs" / name)
    assert [m.arch for m in config.members] == ["resnet32", "resnet32"]
    assert config.schedule.milestones == [60, 120, 180] and config.train.epochs == 200


def test_overrides_reach_nested_keys_and_list_entries(tmp_path):
    path = write(tmp_path, "members: [{arch: small_cnn}, {arch: small_cnn}]\n")
    config = load_config(
        path,
        [
            "optim.lr=0.01",
            "members.1.arch=resnet56",
            "members.0.optim.lr=0.2",
            "schedule.milestones=[3, 5]",
            "train.bf16=true",
        ],
    )
    assert config.optim.lr == 0.01
    assert config.members[1].arch == "resnet56"
    assert config.member_optim(0).lr == 0.2 and config.member_optim(1).lr == 0.01
    assert config.schedule.milestones == [3, 5] and config.train.bf16 is True
    assert [m.name for m in config.members] == ["m0", "m1"]


def test_int_is_accepted_for_float_fields(tmp_path):
    assert load_config(write(tmp_path, "optim: {lr: 1}\n")).optim.lr == 1.0


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key optim\.learning_rate; valid keys of optim: .*lr"):
        load_config(write(tmp_path, "optim: {learning_rate: 0.1}\n"))
    with pytest.raises(ConfigError, match=r"unknown key epochs; valid keys: .*train"):
        load_config(write(tmp_path, "{}\n"), ["epochs=3"])


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs must be int, got 'ten'"):
        load_config(write(tmp_path, "train: {epochs: ten}\n"))
    with pytest.raises(ConfigError, match=r"members\.0\.optim\.lr must be float"):
        load_config(write(tmp_path, "members: [{optim: {lr: fast}}]\n"))


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "members.0.arch=resnet33",
            r"members\.0\.arch 'resnet33' is unknown; valid: small_cnn, small_cnn16, lenet5, resnet20",
        ),
        ("members.1.policy=wild", r"members\.1\.policy 'wild' is not valid; choose one of: none, crop, standard"),
        ("optim.lr=0", r"optim\.lr must be > 0"),
        ("members=[]", r"members is empty"),
        ("loss.mimicry.target=nearest", r"loss\.mimicry\.target 'nearest' is not valid"),
        ("members.0.name=m1", r"members\.1\.name 'm1' is used twice"),
        ("members.5.arch=x", r"members\.5: list index '5' is out of range"),
        ("optim", r"must look like key=value"),
    ],
)
def test_invalid_values_are_one_line_errors(tmp_path, override, message):
    path = write(tmp_path, "members: [{arch: small_cnn}, {arch: small_cnn}]\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path, [override])
    assert "\n" not in str(error.value)


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml is not valid YAML at line 2; fix the file"):
        load_config(write(tmp_path, "optim:\n  lr: 0.1: 2\n"))


def test_dumped_config_loads_back_identically(tmp_path):
    config = load_config(REPO / "configs" / "demo.yaml", ["optim.lr=0.02"])
    dump_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["lr"] == 0.02


def test_apply_override_parses_yaml_values():
    raw = {}
    apply_override(raw, "a.b=[1, 2]")
    apply_override(raw, "a.c=hello")
    assert raw == {"a": {"b": [1, 2], "c": "hello"}}


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string; float fields accept it all the same.
    config = load_config(write(tmp_path, "optim: {weight_decay: 5e-4}\n"), ["optim.lr=1e-3"])
    assert config.optim.lr == 1e-3 and config.optim.weight_decay == 5e-4


def test_auto_policies_give_each_member_a_distinct_policy(tmp_path):
    path = write(tmp_path, "policies: auto\nmembers: [{}, {}, {}, {}]\n")
    policies = [m.policy for m in load_config(path).members]
    assert len(set(policies)) == 4 and policies[0] == "none" and policies[-1] == "randaugment"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "policies: auto\nmembers: [" + "{}, " * 11 + "{}]\n",
            r"policies: auto has 12 members but only 10 policies exist",
        ),
        ("members: [{strength: 2.5}]\n", r"members\.0\.strength must be in \[0\.0, 2\.0\], got 2\.5"),
        ("loss: {diversity: {kind: margin, weight: -1}}\n", r"loss\.diversity: weight and margin must be >= 0"),
        (
            "loss: {diversity: {kind: margin, weight: 1, margin: -0.1}}\n",
            r"loss\.diversity: weight and margin must be >= 0",
        ),
        ("loss: {diversity: {kind: margin}}\n", r"loss\.diversity\.kind is margin but loss\.diversity\.weight is 0"),
        (
            "loss: {diversity: {kind: spread, weight: 1}}\n",
            r"loss\.diversity\.kind 'spread' is not valid; choose one of: none",
        ),
        ("policies: random\n", r"policies 'random' is not valid; choose one of: members, auto"),
    ],
)
def test_diff_dml_settings_are_validated(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config(write(tmp_path, text))
    assert "\n" not in str(error.value)


def test_exchange_runs_when_either_peer_term_is_on(tmp_path):
    independent = load_config(write(tmp_path, "loss: {mimicry: {weight: 0}}\n"))
    assert not independent.exchanges_logits and independent.independent
    diverse = load_config(write(tmp_path, "loss: {mimicry: {weight: 0}, diversity: {kind: nontarget, weight: 0.5}}\n"))
    assert diverse.exchanges_logits and not diverse.independent
    # A weight of 0 with kind none is off; one member reading its peers makes every member exchange.
    assert not load_config(write(tmp_path, "loss: {mimicry: {weight: 0}, diversity: {weight: 1}}\n")).exchanges_logits
    one_learns = load_config(write(tmp_path, "loss: {mimicry: {weight: 0}}\nmembers: [{}, {loss: {mimicry: 0.5}}]\n"))
    assert one_learns.exchanges_logits and one_learns.needs(0) == set() and one_learns.needs(1) == {"peers"}
    assert one_learns.term_weight(1, "mimicry") == 0.5 and one_learns.term_weight(0, "mimicry") == 0.0


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "mimicry: {weight: 0}\n",
            r"^mimicry is now loss\.mimicry \(config format 2 .*\); write loss\.mimicry\.weight=\.\.\. "
            r"instead of mimicry\.weight=\.\.\.$",
        ),
        ("diversity: {kind: margin}\n", r"^diversity is now loss\.diversity "),
        (
            "train: {label_smoothing: 0.1}\n",
            r"^train\.label_smoothing is now loss\.ce\.label_smoothing .* write "
            r"loss\.ce\.label_smoothing=\.\.\. instead of train\.label_smoothing=\.\.\.$",
        ),
    ],
)
def test_keys_of_config_format_1_say_where_they_live_now(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "members: [{loss: {mimickry: 1}}]\n",
            r"members\.0\.loss\.mimickry is not a term of the objective; "
            r"valid: ce, focal, mdca, cskd, mimicry, diversity, distill",
        ),
        ("members: [{loss: {mimicry: -1}}]\n", r"members\.0\.loss\.mimicry must be a weight >= 0, got -1"),
        ("loss: {ce: {weight: 0}, mimicry: {weight: 0}}\n", r"member 0's objective has no term with weight > 0"),
        ("loss: {ce: {label_smoothing: 1.0}}\n", r"loss\.ce\.label_smoothing must be in \[0, 1\), got 1\.0"),
        ("loss: {focal: {weight: 1, gamma: -1}}\n", r"loss\.focal\.gamma must be >= 0, got -1"),
        ("data: {labelled_fraction: 0}\n", r"data\.labelled_fraction must be in \(0, 1\], got 0"),
        ("data: {labelled_fraction: 1.5}\n", r"data\.labelled_fraction must be in \(0, 1\], got 1\.5"),
        ("data: {labelled_fraction: 0.5, labelled_indices: a.txt}\n", r"set one of them"),
        ("data: {labelled_fraction: 0.5}\nloss: {cskd: {weight: 1}}\n", r"loss\.cskd draws each anchor's partner"),
        ("data: {batch_size: 1}\nloss: {cskd: {weight: 1}}\n", r"data\.batch_size 1 is too small for loss\.cskd"),
        ("loss: {cskd: {weight: 1, temperature: 0}}\n", r"loss\.cskd\.temperature must be > 0"),
        (
            "data: {labelled_fraction: 0.3}\nloss: {mimicry: {target: ensemble_min_logit}}\n",
            r"ensemble_min_logit reads every sample's label",
        ),
        ("loss: {distill: {weight: 0.9}}\n", r"loss\.distill needs teachers: set teacher\.run_dir="),
        (
            "teacher: {run_dir: runs/t}\n",
            r"teacher\.run_dir is set \(runs/t\) but no member distils it; set loss\.distill\.weight=0\.9",
        ),
        (
            "loss: {distill: {weight: 0.9, temperature: 0}}\nteacher: {run_dir: t}\n",
            r"loss\.distill\.temperature must be > 0",
        ),
        (
            "loss: {distill: {weight: 1}}\nteacher: {run_dir: t, perturbation: fgsm}\n",
            r"teacher\.perturbation 'fgsm' is not valid; choose one of: none, gaussian, ods, confods",
        ),
        ("loss: {distill: {weight: 1}}\nteacher: {run_dir: t, step_size: 0}\n", r"teacher\.step_size must be > 0"),
        (
            "views: own\nloss: {distill: {weight: 1}}\nteacher: {run_dir: t, perturbation: confods}\n",
            r"teacher\.perturbation confods .* views: own gives the members different views; set views=shared",
        ),
        ("schedule: {name: cyclic, warmup_epochs: 1}\n", r"schedule cyclic climbs to its peak itself"),
        ("data: {resolution: {min_res: 192, max_res: 160}}\n", r"data\.resolution: set both min_res <= max_res"),
        (
            "data: {resolution: {start_ramp: 5, end_ramp: 3}}\n",
            r"data\.resolution: need sizes >= 0 and start_ramp <= end_ramp",
        ),
        ("data: {order: sequential}\n", r"data\.order 'sequential' is not valid; choose one of: shuffle, page_local"),
        ("data: {order: page_local, page_window: 0}\n", r"data\.page_window must be >= 1, got 0"),
        ("data: {normalize: imagenet}\n", r"data\.normalize 'imagenet' is not valid; choose one of: dataset, unit"),
        (
            "data: {order: page_local}\nloss: {cskd: {weight: 1}}\n",
            r"data\.order page_local cannot lay out CS-KD's partners",
        ),
        (
            "data: {random_resized_crop: true}\nmembers: [{policy: standard}]\n",
            r"members\.0\.policy standard crops again after data\.random_resized_crop; use none or flip",
        ),
    ],
)
def test_objective_settings_are_validated(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_views_choose_whose_augmentation_draws_each_member_uses(tmp_path):
    members = "members: [{policy: crop}, {policy: crop}, {policy: standard}, {policy: crop, strength: 0.5}]\n"
    streams = {
        views: [load_config(write(tmp_path, f"views: {views}\n{members}")).view_stream(m) for m in range(4)]
        for views in ("auto", "shared", "own")
    }
    assert streams == {"auto": [0, 0, 2, 3], "shared": [0, 0, 0, 0], "own": [0, 1, 2, 3]}
    with pytest.raises(ConfigError, match=r"views 'mine' is not valid; choose one of: auto, shared, own"):
        load_config(write(tmp_path, "views: mine\n"))


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "3",
            r"^train\.members_per_gpu must be auto or a divisor of the K=2 members \(a GPU holds the same replica of n "
            r"members\), got 3$",
        ),
        ("many", r"^train\.members_per_gpu must be auto or a divisor of the K=2 members .*, got 'many'$"),
        ("0", r"^train\.members_per_gpu must be auto or a divisor of the K=2 members .*, got 0$"),
        ("2.0", r"^train\.members_per_gpu must be int or str, got 2\.0$"),
        ("true", r"^train\.members_per_gpu must be int or str, got True$"),
    ],
)
def test_members_per_gpu_is_an_int_or_auto(tmp_path, value, message):
    path = write(tmp_path, "members: [{}, {}]\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, [f"train.members_per_gpu={value}"])
    assert load_config(path, ["train.members_per_gpu=2"]).train.members_per_gpu == 2


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_validate_changes_nothing(path):
    config = load_config(path)
    dumped = config_to_dict(config)
    config.validate()
    assert config_to_dict(config) == dumped


def test_resolve_fills_in_names_and_auto_policies_and_validate_leaves_an_unresolved_tree_alone():
    tree = build(CohortConfig, {"policies": "auto", "members": [{"name": "a", "policy": "crop"}, {}, {}]})
    dumped = config_to_dict(tree)
    with pytest.raises(ConfigError, match=r"^members\.2\.name '' is used twice"):  # the names are resolve's to fill in
        tree.validate()
    assert config_to_dict(tree) == dumped
    tree.resolve()
    assert [(m.name, m.policy) for m in tree.members] == list(zip(["a", "m1", "m2"], auto_policies(3)))
    tree.validate()
    resolved = config_to_dict(tree)
    tree.resolve()
    assert config_to_dict(tree) == resolved


def test_a_cohort_too_large_for_auto_policies_is_reported_in_validates_turn():
    tree = build(CohortConfig, {"policies": "auto", "replicas": 0, "members": [{}] * 11})
    tree.resolve()
    assert {m.policy for m in tree.members} == {"standard"}
    with pytest.raises(ConfigError, match=r"^replicas must be >= 1, got 0$"):
        tree.validate()
    tree.replicas = 1
    with pytest.raises(ConfigError, match=r"^policies: auto has 11 members but only 10 policies exist"):
        tree.validate()


# --- bad inputs refused before any process starts (issue 22) ---------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.dist_timeout_s=.inf", r"^train\.dist_timeout_s must be a finite number, got inf; set a finite value$"),
        ("train.dist_timeout_s=inf", r"^train\.dist_timeout_s must be a finite number, got inf"),  # the engine's str
        ("train.dist_timeout_s=1e-6", r"^train\.dist_timeout_s must be a finite number of seconds >= 1, got 1e-06; "),
        ("train.dist_timeout_s=0.5", r"^train\.dist_timeout_s must be a finite number of seconds >= 1, got 0\.5"),
        ("train.threads_per_rank=-1", r"^train\.threads_per_rank must be >= 0 \(0: the cores shared .*\), got -1$"),
        ("train.max_local_ranks=-1", r"^train\.max_local_ranks must be >= 0 \(0: four ranks per core\), got -1$"),
        ("seed=-1", r"^seed must be >= 0 \(numpy's seeds are not negative\), got -1$"),
        ("data.labelled_seed=-1", r"^data\.labelled_seed must be >= 0 \(numpy's seeds are not negative\), got -1$"),
        ("optim.betas=[2, 3]", r"^optim\.betas must be two numbers in \[0, 1\) \(AdamW's β1, β2\), got \[2\.0, 3\.0\]"),
        (
            "optim.betas=[0.9]",
            r"^optim\.betas must be two .*, got \[0\.9\]; e\.g\. \[0\.9, 0\.999\]$",
        ),
        ("members.1.optim={betas: [0.9, 1]}", r"^members\.1\.optim\.betas must be two numbers in \[0, 1\)"),
        ("optim.lr=.nan", r"^optim\.lr must be a finite number, got nan; set a finite value$"),
        ("optim.lr=nan", r"^optim\.lr must be a finite number, got nan"),  # a string the engine coerces
        ("optim.lr=.inf", r"^optim\.lr must be a finite number, got inf"),
        ("optim.lr=-inf", r"^optim\.lr must be a finite number, got -inf"),
        ("optim.weight_decay=.nan", r"^optim\.weight_decay must be a finite number, got nan"),
        ("optim.weight_decay=inf", r"^optim\.weight_decay must be a finite number, got inf"),
        ("members.0.optim={lr: .nan}", r"^members\.0\.optim\.lr must be a finite number, got nan"),
        ("members.1.optim={weight_decay: Infinity}", r"^members\.1\.optim\.weight_decay must be a finite number"),
        ("optim.betas=[.nan, 0.9]", r"^optim\.betas\.0 must be a finite number, got nan"),
        ("members.1.strength=.nan", r"^members\.1\.strength must be a finite number, got nan"),
        ("loss.ce.label_smoothing=nan", r"^loss\.ce\.label_smoothing must be a finite number, got nan"),
        ("members.0.loss={mimicry: .nan}", r"^members\.0\.loss\.mimicry must be a weight >= 0, got nan$"),
        ("members.0.loss={mimicry: .inf}", r"^members\.0\.loss\.mimicry must be a weight >= 0, got inf$"),
    ],
)
def test_settings_that_would_fail_after_launch_are_refused_in_the_config(tmp_path, override, message):
    path = write(tmp_path, "members: [{arch: small_cnn}, {arch: small_cnn}]\noptim: {name: adamw}\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path, [override])
    assert "\n" not in str(error.value)


def test_the_bounds_themselves_are_accepted(tmp_path):
    path = write(tmp_path, "optim: {name: adamw, betas: [0, 0.99]}\n")
    config = load_config(path, ["train.dist_timeout_s=1", "seed=0", "train.threads_per_rank=0", "optim.lr=1e-3"])
    assert (config.train.dist_timeout_s, config.optim.betas, config.train.max_local_ranks) == (1.0, [0.0, 0.99], 0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text(""), r"c\.yaml is empty; write the run's keys into it \(start from a copy of configs/"),
        (lambda p: p.write_text("# all commented out\n# seed: 1\n"), r"c\.yaml is empty; write the run's keys"),
        (lambda p: p.write_bytes(b"name: caf\xe9\n"), r"c\.yaml is not UTF-8 text \(byte 0xe9 on line 1\); save it"),
        (lambda p: p.mkdir(), r"c\.yaml is a directory, not a YAML file; pass the file itself$"),
        (lambda p: p.write_text("seed: 1\noptim: {lr: 0.1}\nseed: 2\n"), r"sets key seed twice \(on lines 1 and 3\)"),
        (lambda p: p.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n"), r"c\.yaml sets key lr twice \(on lines 2 and 3\)"),
    ],
    ids=["empty", "only-comments", "latin-1", "directory", "duplicate-top-key", "duplicate-nested-key"],
)
def test_a_config_file_that_cannot_be_meant_is_a_one_line_error(tmp_path, make, message):
    make(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=message) as error:
        load_config(tmp_path / "c.yaml")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("", [], r"c\.yaml is empty; "),
        ("optim: {lr: 0.1}\noptim: {lr: 0.2}\n", [], r"c\.yaml sets key optim twice"),
        ("members: [{}, {}]\n", ["optim.lr=.nan"], r"optim\.lr must be a finite number, got nan"),
        ("members: [{}, {}]\n", ["seed=-1"], r"seed must be >= 0"),
        ("members: [{}, {}]\n", ["train.dist_timeout_s=1e-6"], r"train\.dist_timeout_s must be a finite number of"),
    ],
)
def test_cohort_train_reports_a_bad_config_in_one_line_and_starts_nothing(
    tmp_path, monkeypatch, capsys, text, overrides, message
):
    import cohort.cli

    monkeypatch.chdir(tmp_path)  # were the config accepted, nothing would land in the checkout
    monkeypatch.setattr(cohort.cli, "plan_run", lambda *a, **k: pytest.fail("the bad config was accepted"))
    (tmp_path / "c.yaml").write_text(text)
    assert cohort.cli.main(["train", str(tmp_path / "c.yaml"), *overrides]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cohort: error: ") and "Traceback" not in captured.err
    assert re.search(message, lines[0]) and captured.out == ""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("exchange.every=0", "exchange.every must be >= 1"),
        ("exchange.refresh_every=0", "exchange.refresh_every must be >= 1"),
        ("exchange.burn_in_steps=-1", "exchange.burn_in_steps must be >= 0"),
        ("exchange.mode=gossip", "exchange.mode 'gossip' is not valid; choose one of: logits, codistill"),
        ("data.sample_order=mine", "data.sample_order 'mine' is not valid; choose one of: shared, per_member"),
        ("data.sample_order=per_member", "data.sample_order per_member gives each member other samples at a step, but"),
    ],
)
def test_exchange_and_sample_order_settings_are_one_line_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, "members: [{}, {}]\n"), [override])


def test_codistillation_takes_per_member_orders_and_refuses_what_it_cannot_serve(tmp_path):
    path = write(tmp_path, "members: [{}, {}]\nexchange: {mode: codistill, refresh_every: 3}\n")
    config = load_config(path, ["data.sample_order=per_member"])
    assert config.codistills and config.reads_peers and not config.exchanges_logits and not config.independent
    with pytest.raises(ConfigError, match="exchange.every 4 is for mode logits"):
        load_config(path, ["exchange.every=4"])
    with pytest.raises(ConfigError, match="has nothing to exchange: no member reads its peers"):
        load_config(path, ["loss.mimicry.weight=0"])
    independent = load_config(path, ["loss.mimicry.weight=0", "exchange.mode=logits", "data.sample_order=per_member"])
    assert independent.independent  # separate orders: a deep ensemble of separate runs


def test_the_cadences_say_which_steps_gather_and_which_refresh(tmp_path):
    config = load_config(
        write(tmp_path, "members: [{}, {}]\nexchange: {mode: codistill, refresh_every: 3, burn_in_steps: 2}\n")
    )
    assert [s for s in range(12) if config.exchange.refreshes_at(s)] == [2, 5, 8, 11]
    config.exchange.every = 4
    assert [s for s in range(12) if config.exchange.gathers_at(s)] == [0, 4, 8]


def test_a_tracker_is_on_when_its_key_is_set_and_tracking_is_run_neutral(tmp_path):
    from cohort.config import same_run_config

    demo = REPO / "configs" / "demo.yaml"
    assert load_config(demo).track.trackers == {}
    config = load_config(demo, ["track.mlflow.tracking_uri=file:/tmp/store", "track.wandb={}"])
    assert config.track.mlflow.tracking_uri == "file:/tmp/store" and config.track.mlflow.experiment == ""
    assert config.track.wandb.mode == "offline" and list(config.track.trackers) == ["wandb", "mlflow"]
    dump_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").track == config.track  # null sections and set ones read back
    # Adding a tracker when a run is resumed (or moving it) is the same run: nothing computed changes.
    assert same_run_config(config_to_dict(load_config(demo)), config_to_dict(config))
    for override, message in (
        ("track.wandb.mode=cloud", "track.wandb.mode 'cloud' is not valid; choose one of: offline, online"),
        ("track.mlflow.tracking_uri=ftp://x", "track.mlflow.tracking_uri 'ftp://x' is not one cohort can use"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(demo, [override])
    with pytest.raises(ConfigError, match=r"members.0.name 'a/b' cannot name MLflow metrics .* members.0.name=a-b"):
        load_config(demo, ["track.mlflow={}", "members.0.name=a/b"])
    load_config(demo, ["members.0.name=a/b"])  # without MLflow, any name
