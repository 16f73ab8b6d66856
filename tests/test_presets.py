"""A preset's declared configuration is exactly what runs: with no overriding flags, every script
resolves every preset to its table entry, field by field (an unset flag never overrides)."""
import dataclasses

import pytest

import evaluate_regression
import oml_omniglot
import oml_regression
from experiment.omniglot_presets import ANML_PRESETS, OMNIGLOT_PRESETS, OmniglotConfig
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


@pytest.mark.parametrize("preset", sorted(set(OMNIGLOT_PRESETS) - set(ANML_PRESETS)))  # ANML's refuse other methods
def test_maml_rep_resolves_each_preset_to_its_entry_with_its_own_length(preset):
    """--method maml-rep reads the preset's MAML-Rep fields; its --steps default is maml_steps (as
    the i.i.d. baselines' comes from iid_epochs), and nothing else moves."""
    args = oml_omniglot.get_args_parser().parse_args(["--preset", preset, "--method", "maml-rep"])
    declared = _fields(_declared(OmniglotConfig, OMNIGLOT_PRESETS, preset))
    assert _fields(oml_omniglot._config(args)) == {**declared, "method": "maml-rep", "steps": declared["maml_steps"]}


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


ONE_FLAG = [  # (script, preset, flag argv, the one field it changes)
    (oml_regression, SineConfig, SINE_PRESETS, "oml2020", ["--update_lr", "0.01"], "update_lr"),
    (oml_regression, SineConfig, SINE_PRESETS, "mrcl2019", ["--second-order"], "first_order"),
    (oml_regression, SineConfig, SINE_PRESETS, "quick", ["--inner-clip", "0"], "inner_clip"),
    (oml_omniglot, OmniglotConfig, OMNIGLOT_PRESETS, "cpu", ["--no-reset"], "reset"),
    (oml_omniglot, OmniglotConfig, OMNIGLOT_PRESETS, "oml2020", ["--class-split", "none"], "class_split"),
    (oml_omniglot, OmniglotConfig, OMNIGLOT_PRESETS, "mrcl2019", ["--strides", "2", "1", "2", "1", "2"], "strides"),
    (oml_omniglot, OmniglotConfig, OMNIGLOT_PRESETS, "cpu", ["--maml-update-lr", "0.05"], "maml_update_lr"),
    (oml_omniglot, OmniglotConfig, OMNIGLOT_PRESETS, "oml2020", ["--ways", "3"], "ways"),
]


@pytest.mark.parametrize("script, config_cls, presets, preset, argv, field", ONE_FLAG,
                         ids=[f"{p} {' '.join(a)}" for _, _, _, p, a, _ in ONE_FLAG])
def test_a_flag_overrides_only_its_own_field(script, config_cls, presets, preset, argv, field):
    resolved = _fields(script._config(script.get_args_parser().parse_args(["--preset", preset, *argv])))
    expected = _fields(_declared(config_cls, presets, preset))
    assert {k for k in expected if expected[k] != resolved[k]} == {field}


def test_the_seed_readme_regression_command_is_mrcl2019():
    # the 2019 README's spelling, --update-step, among the original's underscored ones
    argv = ["--update-step", "40", "--meta_lr", "0.0001", "--update_lr", "0.003", "--tasks", "10",
            "--capacity", "10", "--width", "300", "--rln", "6"]
    resolved = oml_regression._config(oml_regression.get_args_parser().parse_args(argv))
    assert _fields(resolved) == _fields(_declared(SineConfig, SINE_PRESETS, "mrcl2019"))


def test_cpu_wide_is_the_cpu_preset_with_128_channels_and_twice_the_steps():
    """docs/protocols.md's row: the `cpu` preset in every field but the channels (128: 1,152
    features into the linear PLN) and the length (20,000 steps). The inner rate is `cpu`'s 0.3, which
    the meta-validation search chose at both widths (docs/baselines.md, docs/cpu_wide.md; `cpu_wide`
    had the 2020 code's 0.03 until 5 December 2026). Both meta rates are 3e-4, chosen apart:
    `cpu_wide`'s by the rate grid of docs/cpu_wide.md, `cpu`'s on the meta-validation classes."""
    from experiment.omniglot_presets import build_model
    wide = _fields(_declared(OmniglotConfig, OMNIGLOT_PRESETS, "cpu_wide"))
    cpu = _fields(_declared(OmniglotConfig, OMNIGLOT_PRESETS, "cpu"))
    assert {k for k in wide if wide[k] != cpu[k]} == {"preset", "channels", "steps"}
    assert (wide["channels"], wide["steps"], cpu["steps"]) == (128, 20_000, 10_000)
    assert (wide["meta_lr"], cpu["meta_lr"], wide["update_lr"], cpu["update_lr"]) == (3e-4, 3e-4, 0.3, 0.3)
    assert wide["image_size"] == 28
    resolved = _fields(oml_omniglot._config(oml_omniglot.get_args_parser().parse_args(["--preset", "cpu_wide"])))
    assert resolved == wide  # no flag given: exactly the declared preset
    assert build_model(_declared(OmniglotConfig, OMNIGLOT_PRESETS, "cpu_wide")).pln[-1].in_features == 1152


def test_anml_is_the_anml_repositorys_command_and_anml_cpu_only_its_size_and_length():
    """docs/anml.md's table: uvm-neurobotics-lab/ANML's README command (--rln 7 --meta_lr 0.001
    --update_lr 0.1 --steps 20000 --seed 9) with its defaults (one class, 20 inner steps) and its
    sampler (64 random images + the class's 20 again), first order, at 28x28 with 112/256 channels."""
    anml = _fields(_declared(OmniglotConfig, OMNIGLOT_PRESETS, "anml"))
    expected = dict(method="anml", image_size=28, nm_channels=112, channels=256, tasks=1, update_step=20,
                    held_out=0, meta_random=64, meta_repeats_trajectory=True, class_split=None, reset=True,
                    update_lr=0.1, meta_lr=1e-3, first_order=True, steps=20_000, seed=9, n_classes=963)
    assert {k: anml[k] for k in expected} == expected
    small = _fields(_declared(OmniglotConfig, OMNIGLOT_PRESETS, "anml_cpu"))
    assert {k for k in small if small[k] != anml[k]} == {"preset", "channels", "nm_channels", "steps"}
    for preset in ANML_PRESETS:
        resolved = oml_omniglot._config(oml_omniglot.get_args_parser().parse_args(["--method", "anml", "--preset", preset]))
        assert _fields(resolved) == _fields(_declared(OmniglotConfig, OMNIGLOT_PRESETS, preset))
