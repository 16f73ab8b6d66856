"""A preset's declared configuration is exactly what runs: with no overriding flags, every script
resolves every preset to its table entry, field by field (an unset flag never overrides)."""
import dataclasses

import pytest

import evaluate_regression
import oml_omniglot
import oml_regression
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig
from experiment.sine_presets import SINE_PRESETS, SineConfig


def _declared(config_cls, presets, name):
    return config_cls(**{**presets[name], "preset": name})


def _fields(config):
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


@pytest.mark.parametrize("preset", sorted(SINE_PRESETS))
def test_oml_regression_resolves_each_preset_to_its_entry(preset):
    resolved = oml_regression._config(oml_regression.get_args_parser().parse_args(["--preset", preset]))
    assert _fields(resolved) == _fields(_declared(SineConfig, SINE_PRESETS, preset))


@pytest.mark.parametrize("preset", sorted(SINE_PRESETS))
def test_untrained_evaluation_network_is_the_preset(preset):
    args = evaluate_regression.get_args_parser().parse_args(["--preset", preset])
    _, config, _ = evaluate_regression._model_and_config(args)
    assert _fields(config) == _fields(_declared(SineConfig, SINE_PRESETS, preset))


@pytest.mark.parametrize("preset", sorted(OMNIGLOT_PRESETS))
def test_oml_omniglot_resolves_each_preset_to_its_entry(preset):
    resolved = oml_omniglot._config(oml_omniglot.get_args_parser().parse_args(["--preset", preset]))
    assert _fields(resolved) == _fields(_declared(OmniglotConfig, OMNIGLOT_PRESETS, preset))


def test_the_quick_start_is_the_quick_preset_with_its_clamp():
    resolved = oml_regression._config(oml_regression.get_args_parser().parse_args([]))
    assert _fields(resolved) == _fields(_declared(SineConfig, SINE_PRESETS, "quick"))
    assert resolved.inner_clip == 10.0  # the README's preset table: "inner grads clamped to ±10"


@pytest.mark.parametrize("preset", ["quick", "oml2020"])
def test_inner_clip_zero_turns_clipping_off_and_a_value_sets_it(preset):
    parse = oml_regression.get_args_parser().parse_args
    assert oml_regression._config(parse(["--preset", preset, "--inner-clip", "0"])).inner_clip is None
    assert oml_regression._config(parse(["--preset", preset, "--inner-clip", "5"])).inner_clip == 5.0
    assert oml_regression._config(parse(["--preset", preset])).inner_clip == 10.0


def test_mrcl2019_declares_no_clamp_and_can_be_given_one():
    parse = oml_regression.get_args_parser().parse_args
    assert oml_regression._config(parse(["--preset", "mrcl2019"])).inner_clip is None
    assert oml_regression._config(parse(["--preset", "mrcl2019", "--inner-clip", "10"])).inner_clip == 10.0


def test_class_split_none_removes_the_split():
    args = oml_omniglot.get_args_parser().parse_args(["--preset", "cpu", "--class-split", "none"])
    assert oml_omniglot._config(args).class_split is None


def test_a_flag_overrides_only_its_own_field():
    parse = oml_regression.get_args_parser().parse_args
    resolved = _fields(oml_regression._config(parse(["--preset", "oml2020", "--update_lr", "0.01"])))
    expected = _fields(_declared(SineConfig, SINE_PRESETS, "oml2020"))
    assert {k for k in expected if expected[k] != resolved[k]} == {"update_lr"}
