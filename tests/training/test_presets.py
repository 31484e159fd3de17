"""The paper's grid as presets, and flag overrides."""

import dataclasses
from pathlib import Path

import pytest

from training import presets, runs
from training.experiments.cells import Cell
from training.experiments.training_runs import TrainingSetup
from training.presets import PRESETS, TrainConfig, preset
from training.train import build_parser, resolve_config


def test_grid_covers_the_paper():
    for dataset in ("cifar10", "stl10", "celeba"):
        for norm in ("sn", "ssn", "bsn", "bssn"):
            assert f"{dataset}-cnn-{norm}" in PRESETS
        for norm in ("sn", "bsn"):
            assert preset(f"{dataset}-cnn-{norm}-ndis5").n_dis == 5
            assert preset(f"{dataset}-cnn-{norm}-ndis5").beta2 == 0.9
            assert preset(f"{dataset}-cnn-{norm}-g2e-4-d1e-4").g_lr == 2e-4
    imagenet = preset("imagenet-resnet-bssn")
    assert (imagenet.arch, imagenet.image_size, imagenet.batch_size,
            imagenet.generator_batch_size, imagenet.beta1, imagenet.n_dis) == (
        "resnet", 128, 16, 32, 0.0, 5)
    assert preset("stl10-cnn-bssn").image_size == 48
    assert preset("celeba-cnn-sn").dataset == "celeb_a"
    # The paper's crop, kept when a folder of the same faces replaces TFDS.
    assert preset("celeba-cnn-bssn").crop_size == 128
    assert preset("cifar10-cnn-bssn").crop_size is None


def test_flags_override_the_preset():
    args = build_parser().parse_args(["--preset", "cifar10-cnn-bssn", "--scale", "1.6",
                                      "--steps", "10", "--n-dis", "2", "--dataset", "folder",
                                      "--crop-size", "24"])
    config = resolve_config(args)
    assert (config.scale, config.steps, config.n_dis, config.dataset, config.crop_size) == (
        1.6, 10, 2, "folder", 24)
    assert config.norm == "bssn"


def test_unknown_preset_and_keys():
    with pytest.raises(ValueError, match="Unknown preset 'cifar100'"):
        preset("cifar100")
    with pytest.raises(ValueError, match="Unknown config keys \\['colour'\\]"):
        TrainConfig.from_dict({"colour": "red"})


def test_presets_train_as_the_official_code_by_default():
    cnn, resnet = preset("cifar10-cnn-bssn"), preset("imagenet-resnet-bssn")
    for config in (cnn, resnet):
        assert config.differentiable_power_iteration and config.vector_updates == "explicit"
        assert (config.bn_momentum, config.bn_epsilon, config.adam_epsilon) == (0.9, 1e-5, 1e-8)
    assert cnn.reuse_latents and cnn.generator_bn_updates == "every_forward"
    assert not resnet.reuse_latents and resnet.generator_bn_updates == "generator_step"
    assert cnn.antialias and not resnet.antialias  # the official ImageNet loader: cv2 bilinear


def test_semantics_flag_selects_the_old_settings_and_single_flags_override_it():
    args = build_parser().parse_args(["--semantics", "keras", "--bn-momentum", "0.8",
                                      "--reuse-latents", "true"])
    config = resolve_config(args)
    assert (config.differentiable_power_iteration, config.vector_updates, config.bn_momentum,
            config.adam_epsilon, config.initializers, config.reuse_latents) == (
        False, "in_call", 0.8, 1e-7, "truncated", True)


def test_a_config_saved_before_the_semantics_settings_reads_as_the_old_semantics():
    config = TrainConfig.from_dict({"norm": "bssn", "scale": 1.2})
    assert (config.differentiable_power_iteration, config.vector_updates,
            config.bn_momentum) == (False, "in_call", 0.99)


@pytest.mark.parametrize("mixed_precision, precision", [(True, "float16"), (False, "float32")])
def test_a_config_saved_with_mixed_precision_reads_as_its_precision(mixed_precision, precision):
    saved = {**dataclasses.asdict(preset("cifar10-cnn-bssn", precision=precision)),
             "input_gradient_every": 1}
    del saved["precision"]
    saved["mixed_precision"] = mixed_precision  # as 0.2 wrote it
    assert TrainConfig.from_dict(saved).precision == precision
    assert runs.config_changes(saved, preset("cifar10-cnn-bssn", precision=precision)) == []
    assert runs.config_changes(saved, preset("cifar10-cnn-bssn", precision="bfloat16")) == [
        f"precision: {precision!r} -> 'bfloat16'"]


def test_a_config_saved_before_sampled_input_gradients_measured_every_step():
    assert TrainConfig.from_dict({"norm": "bssn"}).input_gradient_interval() == 1
    assert preset("cifar10-cnn-bssn").input_gradient_interval() == 10
    assert preset("cifar10-cnn-bssn", log_every=4).input_gradient_interval() == 4


def test_the_report_table_of_departures_names_every_semantics_setting():
    # docs/official-code.md: the one table of the official code's values, our defaults, flags.
    report = (Path(__file__).resolve().parents[2] / "docs" / "official-code.md").read_text()
    table = "\n".join(line for line in report.splitlines() if line.startswith("|"))
    settings = set(presets.semantics("keras")) | set(presets.semantics("official", "resnet"))
    for setting in settings:
        assert f"`--{setting.replace('_', '-')}" in table, setting
    assert "`--semantics keras`" in table


def test_a_changed_architecture_trains_with_its_own_semantics():
    args = build_parser().parse_args(["--preset", "cifar10-cnn-bssn", "--arch", "resnet"])
    config = resolve_config(args)
    assert (config.arch, config.reuse_latents, config.generator_bn_updates) == (
        "resnet", False, "generator_step")
    assert config == preset("cifar10-cnn-bssn", arch="resnet")
    resnet = preset("cifar10-resnet-bssn")
    assert (resnet.reuse_latents, resnet.generator_bn_updates) == (False, "generator_step")
    cnn = preset("cifar10-resnet-bssn", arch="cnn")
    assert (cnn.reuse_latents, cnn.generator_bn_updates) == (True, "every_forward")


def test_flags_given_with_a_changed_architecture_still_win():
    args = build_parser().parse_args(["--preset", "cifar10-cnn-bssn", "--arch", "resnet",
                                      "--reuse-latents", "true"])
    config = resolve_config(args)
    assert (config.reuse_latents, config.generator_bn_updates) == (True, "generator_step")
    args = build_parser().parse_args(["--arch", "resnet", "--semantics", "keras"])
    config = resolve_config(args)
    assert (config.vector_updates, config.reuse_latents, config.generator_bn_updates) == (
        "in_call", False, "every_forward")


def test_a_study_of_the_resnet_trains_with_its_semantics():
    setup = TrainingSetup(dataset="cifar10", data_dir=None, arch="resnet", image_size=32,
                          steps=10, batch_size=8)
    config = setup.config("bssn", 1.2, seed=0)
    assert (config.reuse_latents, config.generator_bn_updates) == (False, "generator_step")
    assert setup.config("bssn", 1.2, seed=0, reuse_latents=True).reuse_latents
    cnn = dataclasses.replace(setup, arch="cnn").config("bssn", 1.2, seed=0)
    assert (cnn.reuse_latents, cnn.generator_bn_updates) == (True, "every_forward")
    cell = Cell.parse("bssn:1.2:official+arch=resnet")
    config = cell.config(0, 10, 5, "cifar10", None)
    assert (config.arch, config.reuse_latents, config.generator_bn_updates) == (
        "resnet", False, "generator_step")
    cell = Cell.parse("bssn:1.2:official+arch=resnet+reuse_latents=true")
    assert cell.config(0, 10, 5, "cifar10", None).reuse_latents
