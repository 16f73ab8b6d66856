"""Flags are declared once, in the config (experiment.config.setting), and derived from it: every
field has exactly one declaration, an unset flag is absent (so it never overrides a preset), every
original spelling still reaches its field, and every field says what it holds."""
import argparse
import dataclasses

import pytest

import evaluate_omniglot
import evaluate_regression
import oml_omniglot
import oml_regression
from experiment import limits, method_fields
from experiment.config import given_flags, given_settings
from experiment.omniglot_presets import OmniglotConfig
from experiment.sine_presets import SineConfig
from tests.conftest import one_line_error

SCRIPTS = {"oml_regression": (oml_regression, SineConfig), "oml_omniglot": (oml_omniglot, OmniglotConfig)}
# Set by the presets only: a flag is an input to bound (validate(), experiment.limits) before it is offered.
PRESET_ONLY = {
    SineConfig: {"lr_milestones", "lr_gamma", "n_train_functions", "n_eval_functions", "iid_functions", "iid_samples",
                 "iid_grouped", "iid_lr_milestones", "iid_lr_gamma", "srnn_weight"},
    OmniglotConfig: {"n_outputs", "meta_repeats_trajectory", "srnn_weight"},
}
# Every option string the two training scripts took before the flags were derived from the configs
# (python oml_*.py --help), and the namespace entry it set; each must still set the same one. The
# one exception is oml_omniglot.py --epoch, now refused (test_epoch_means_one_thing_per_script).
BEFORE = {
    "oml_regression": {
        "--arch": "arch", "--batch-size": "batch_size", "--batch_size": "batch_size", "--capacity": "capacity",
        "--device": "device", "--epoch": "steps", "--epochs_meta": "steps", "--eval-batch": "eval_batch",
        "--eval-lr": "eval_lr", "--eval-protocol": "eval_protocol", "--eval-runs": "eval_runs",
        "--eval-steps": "eval_steps", "--eval-test-samples": "eval_test_samples", "--first-order": "first_order",
        "--iid-lr": "iid_lr", "--iid_lr": "iid_lr", "--inner-clip": "inner_clip", "--log-every": "log_every",
        "--meta-batch": "meta_batch", "--meta-lr": "meta_lr", "--meta_lr": "meta_lr", "--method": "method",
        "--name": "name", "--no-progress": "progress", "--preset": "preset", "--results-dir": "results_dir",
        "--results_dir": "results_dir", "--resume": "resume", "--rln": "rln", "--save-every": "save_every",
        "--second-order": "first_order", "--seed": "seed", "--slot-mode": "slot_mode", "--srnn-beta": "srnn_beta",
        "--steps": "steps", "--tasks": "tasks", "--update-lr": "update_lr", "--update-step": "update_step",
        "--update_lr": "update_lr", "--update_step": "update_step", "--width": "width",
    },
    "oml_omniglot": {
        "--cache-dir": "cache_dir", "--channels": "channels", "--class-split": "class_split", "--data-path": "path",
        "--device": "device", "--download": "download", "--epochs_meta": "steps",
        "--first-order": "first_order", "--held-out": "held_out", "--iid-batch": "iid_batch",
        "--iid-epochs": "iid_epochs", "--iid-lr": "iid_lr", "--iid_lr": "iid_lr", "--image-size": "image_size",
        "--image_size": "image_size", "--log-every": "log_every", "--meta-lr": "meta_lr",
        "--meta-random": "meta_random", "--meta_lr": "meta_lr", "--method": "method", "--n-classes": "n_classes",
        "--name": "name", "--no-progress": "progress", "--no-reset": "reset", "--nonstandard-data": "nonstandard_data",
        "--nonstandard_data": "nonstandard_data", "--path": "path", "--pln-hidden": "pln_hidden", "--preset": "preset",
        "--quick-eval": "quick_eval", "--rank": "rank", "--results-dir": "results_dir", "--results_dir": "results_dir",
        "--resume": "resume", "--rln": "rln", "--save-every": "save_every", "--second-order": "first_order",
        "--seed": "seed", "--srnn-beta": "srnn_beta", "--steps": "steps", "--strides": "strides", "--tasks": "tasks",
        "--update-lr": "update_lr", "--update-step": "update_step", "--update_lr": "update_lr",
        "--update_step": "update_step",
    },
}

def _parser(script):
    return SCRIPTS[script][0].get_args_parser()


def _options(parser):
    return {option: action for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_field_is_declared_once_and_the_parser_derived_from_it(script):
    parser, config_cls = _parser(script), SCRIPTS[script][1]
    for field in dataclasses.fields(config_cls):
        actions = [a for a in parser._actions if a.dest == field.name]
        declared = {*field.metadata["flags"], *field.metadata["off_flags"]}
        if field.name in PRESET_ONLY[config_cls]:
            assert not declared and not actions, field.name
            continue
        assert declared, f"{field.name} has no flag and is not marked preset-only"
        # the script adds nothing of its own for a config field: the only options are the declared ones
        assert {o for a in actions for o in a.option_strings} == declared, field.name
        assert all(a.default is argparse.SUPPRESS for a in actions), field.name
    spellings = [f for field in dataclasses.fields(config_cls)
                 for f in (*field.metadata["flags"], *field.metadata["off_flags"])]
    assert len(spellings) == len(set(spellings))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_no_flag_given_means_no_override(script):
    parse, config_cls = _parser(script).parse_args, SCRIPTS[script][1]
    assert given_settings(parse([]), config_cls) == {}
    # script flags are not settings of the config
    assert given_settings(parse(["--name", "x", "--device", "cpu", "--no-progress", "--save-every", "3"]), config_cls) == {}


def _sample(field, spelling):
    """(argv after the spelling, the value the field should get)."""
    meta = field.metadata
    if field.type is bool:
        return [], spelling in meta["flags"]
    if field.type is tuple:
        return ["2", "1"], (2, 1)
    if meta["choices"]:
        return [meta["choices"][-1]], meta["choices"][-1]
    if field.name == "preset":
        return ["mrcl2019"], "mrcl2019"
    kind = field.type.__args__[0] if hasattr(field.type, "__args__") else field.type
    return ["7"], kind("7")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_spelling_parses_to_its_field(script):
    parse, config_cls = _parser(script).parse_args, SCRIPTS[script][1]
    for field in dataclasses.fields(config_cls):
        for spelling in (*field.metadata["flags"], *field.metadata["off_flags"]):
            extra, value = _sample(field, spelling)
            assert given_settings(parse([spelling, *extra]), config_cls) == {field.name: value}, spelling


ORIGINAL = [  # the original's spellings (2019 README, 2019 and 2020 scripts) and what they set
    ("oml_regression", ["--update_lr", "0.01"], {"update_lr": 0.01}),
    ("oml_regression", ["--update-lr", "0.01"], {"update_lr": 0.01}),
    ("oml_regression", ["--meta_lr", "1e-3"], {"meta_lr": 1e-3}),
    ("oml_regression", ["--meta-lr", "1e-3"], {"meta_lr": 1e-3}),
    ("oml_regression", ["--update_step", "40"], {"update_step": 40}),
    ("oml_regression", ["--update-step", "40"], {"update_step": 40}),
    ("oml_regression", ["--tasks", "4", "--capacity", "10", "--width", "300", "--rln", "6"],
     {"tasks": 4, "capacity": 10, "width": 300, "rln": 6}),
    ("oml_regression", ["--epoch", "20000"], {"steps": 20000}),  # mrcl_regression.py's meta-steps
    ("oml_regression", ["--epochs_meta", "20"], {"steps": 20}),
    ("oml_regression", ["--steps", "20"], {"steps": 20}),
    ("oml_regression", ["--second-order"], {"first_order": False}),
    ("oml_regression", ["--inner-clip", "0"], {"inner_clip": None}),
    ("oml_regression", ["--inner-clip", "off"], {"inner_clip": None}),
    ("oml_regression", ["--inner-clip", "2.5"], {"inner_clip": 2.5}),
    ("oml_regression", ["--seed", "3", "--preset", "oml2020"], {"seed": 3, "preset": "oml2020"}),
    ("oml_omniglot", ["--update_lr", "0.03", "--update_step", "20", "--steps", "15000"],
     {"update_lr": 0.03, "update_step": 20, "steps": 15000}),
    ("oml_omniglot", ["--meta_lr", "1e-4", "--tasks", "3"], {"meta_lr": 1e-4, "tasks": 3}),
    ("oml_omniglot", ["--no-reset"], {"reset": False}),
    ("oml_omniglot", ["--no-reset-rows"], {"reset": False}),
    ("oml_omniglot", ["--reset-rows"], {"reset": True}),
    ("oml_omniglot", ["--class-split", "none"], {"class_split": None}),
    ("oml_omniglot", ["--class-split", "0"], {"class_split": None}),
    ("oml_omniglot", ["--class-split", "100"], {"class_split": 100}),
    ("oml_omniglot", ["--strides", "2", "2"], {"strides": (2, 2)}),
    ("oml_omniglot", ["--image_size", "28"], {"image_size": 28}),
    ("oml_omniglot", ["--rln", "6", "--rank", "0"], {}),  # script flags: the seed README's, and the 2020 code's
]


@pytest.mark.parametrize("script, argv, settings", ORIGINAL, ids=[" ".join(a) for _, a, _ in ORIGINAL])
def test_original_spellings_set_the_right_field(script, argv, settings):
    assert given_settings(_parser(script).parse_args(argv), SCRIPTS[script][1]) == settings


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_string_of_before_still_sets_what_it_set(script):
    options = _options(_parser(script))
    assert {spelling: options[spelling].dest for spelling in BEFORE[script] if spelling in options} == BEFORE[script]


def test_epoch_means_one_thing_per_script(capsys):
    # oml_regression: meta-training steps (the original mrcl_regression / oml_regression --epoch)
    assert oml_regression.get_args_parser().parse_args(["--epoch", "5"]).steps == 5
    # evaluate_omniglot: passes over the trajectory (the original evaluate_classification --epoch)
    assert evaluate_omniglot.get_args_parser().parse_args(["--epoch", "5"]).epochs == 5
    # oml_omniglot: the original Omniglot meta-training had --steps; its pretraining's --epoch meant passes
    # (--epochs too, which would otherwise abbreviate --epochs_meta)
    for flag in ("--epoch", "--epochs"):
        with pytest.raises(SystemExit) as stop:
            oml_omniglot.get_args_parser().parse_args(["--method", "pretraining", flag, "45"])
        assert stop.value.code == 2
        assert f"{flag} is not a flag of Omniglot meta-training" in capsys.readouterr().err


def test_each_reset_has_its_own_name_and_the_old_spelling_still_works():
    parse = evaluate_regression.get_args_parser().parse_args
    assert parse(["--fresh-pln"]).fresh_pln and parse(["--reset"]).fresh_pln and not parse([]).fresh_pln
    parse = evaluate_omniglot.get_args_parser().parse_args
    assert parse(["--pln-reset", "last"]).pln_reset == parse(["--reset", "last"]).pln_reset == "last"
    parse = oml_omniglot.get_args_parser().parse_args
    assert given_settings(parse(["--no-reset"]), OmniglotConfig) == {"reset": False}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_field_and_every_flag_says_what_it_holds(script):
    for field in dataclasses.fields(SCRIPTS[script][1]):
        assert field.metadata.get("help", "").strip(), field.name
    for action in _parser(script)._actions:
        if action.help != argparse.SUPPRESS:  # the refused --epoch is not offered
            assert action.help and action.help.strip(), action.option_strings


def test_explicit_flags_for_resume_are_the_ones_given_in_the_configs_terms():
    parser = oml_regression.get_args_parser()
    given = given_flags(parser.parse_args(["--resume", "run", "--steps", "10", "--second-order", "--inner-clip", "0"]),
                        parser, SineConfig)
    assert given == {"resume": ("--resume", "run"), "steps": ("--steps", 10), "first_order": ("--second-order", False),
                     "inner_clip": ("--inner-clip", None, "0")}
    parser = oml_omniglot.get_args_parser()
    given = given_flags(parser.parse_args(["--class-split", "off", "--no-reset", "--update-lr", "0.1"]), parser, OmniglotConfig)
    assert given == {"class_split": ("--class-split", None, "none"), "reset": ("--no-reset-rows", False),
                     "update_lr": ("--update_lr", 0.1)}
    assert given_flags(parser.parse_args([]), parser, OmniglotConfig) == {}


# --- a flag of one method, given with another, is refused (it used to be silently ignored) ----------------

METHOD_ROWS = [
    (oml_omniglot, ["--method", "oml", "--ways", "10"], "--ways is read by --method maml-rep only; with --method oml"),
    (oml_omniglot, ["--method", "oml", "--maml-update-lr", "0.1"], "--maml-update-lr is read by --method maml-rep only"),
    (oml_omniglot, ["--method", "maml-rep", "--update_lr", "0.1"], "--update_lr is read by --method oml or anml only"),
    (oml_omniglot, ["--method", "maml-rep", "--iid-lr", "0.1"], "--iid-lr is read by --method pretraining or srnn only"),
    (oml_omniglot, ["--method", "pretraining", "--srnn-beta", "0.2"], "--srnn-beta is read by --method srnn only"),
    (oml_omniglot, ["--method", "srnn", "--second-order"], "--second-order is read by --method oml or anml or maml-rep"),
    (oml_omniglot, ["--method", "pretraining", "--no-reset"], "--no-reset-rows is read by --method oml or anml only"),
    (oml_regression, ["--method", "pretraining", "--meta_lr", "0.1"], "--meta_lr is read by --method oml only"),
    (oml_regression, ["--method", "srnn", "--update_lr", "0.1"],
     "--update_lr is read by --method oml (and the trajectory evaluation, with --eval-protocol trajectory) only"),
    (oml_regression, ["--method", "oml", "--iid-lr", "0.1"], "--iid-lr is read by --method pretraining or srnn only"),
    (evaluate_omniglot, ["--learner", "ewc", "--memory", "100"], "--memory is read by --learner er or mer only"),
    (evaluate_omniglot, ["--learner", "er", "--mer-gamma", "0.5"], "--mer-gamma is read by --learner mer only"),
]


@pytest.mark.parametrize("module, argv, message", METHOD_ROWS, ids=[" ".join(r[1]) for r in METHOD_ROWS])
def test_a_flag_another_method_would_ignore_is_refused(tmp_path, capsys, monkeypatch, module, argv, message):
    monkeypatch.chdir(tmp_path)  # any file written by mistake lands here, where it is seen
    err = one_line_error(capsys, module.main, module.get_args_parser(), argv + ["--results-dir", str(tmp_path / "r")])
    assert message in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_trajectory_evaluation_reads_the_inner_loop_flags():
    """A baseline evaluated with the trajectory protocol reads --update_lr (its online rate), so there it applies."""
    args = oml_regression.get_args_parser().parse_args(["--method", "pretraining", "--update_lr", "0.1",
                                                        "--eval-protocol", "trajectory"])
    args, _ = oml_regression.sweep_point(args)
    limits.method_flags(oml_regression._given(args), "pretraining", method_fields.SINE_METHOD_FIELDS,
                        also=("trajectory evaluation",))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_method_table_names_real_fields_and_methods(script):
    """A renamed field or method would make the table silently check nothing."""
    config_cls = SCRIPTS[script][1]
    table = method_fields.OMNIGLOT_METHOD_FIELDS if config_cls is OmniglotConfig else method_fields.SINE_METHOD_FIELDS
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    methods = set(fields["method"].metadata["choices"])
    for name, users in table.items():
        if name == "nm_channels" and name not in fields:  # ANML's, where ANML has landed
            continue
        assert name in fields and fields[name].metadata["flags"], name
        assert {u for u in users if " " not in u} <= methods | {"anml"}, (name, users)


# --- argparse's own refusals are one line too (utils.cli.run_main) -----------------------------------------

@pytest.mark.parametrize("module, argv, message", [
    (oml_regression, ["--steps", "1.5"], "error: argument --steps/--epoch/--epochs_meta: invalid int value: '1.5'"),
    (oml_regression, ["--first-order", "--second-order"], "not allowed with argument --first-order"),
    (oml_omniglot, ["--method", "magic"], "argument --method: invalid choice: 'magic'"),
    (oml_omniglot, ["--epoch", "3"], "--epoch is not a flag of Omniglot meta-training"),
    (evaluate_regression, ["--runs"], "argument --runs: expected one argument"),
    (evaluate_omniglot, ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_argparse_refusals_are_one_line(tmp_path, capsys, module, argv, message):
    err = one_line_error(capsys, module.main, module.get_args_parser(), argv + ["--results-dir", str(tmp_path / "r")])
    assert message in err and err.endswith("(see --help)"), err
    assert not (tmp_path / "r").exists()
