"""Sweeps (experiment/grid.py): the combinations of list-valued flags numbered as the 2020 code's
`get_run` numbered them (HEAD:utils/utils.py:289-325: a mixed-radix rank, seed the fastest digit,
then the other list flags in the original parser's order), and `--rank` on every script."""
import dataclasses
import itertools
import json

import pytest

import evaluate_omniglot
import evaluate_regression
import oml_omniglot
import oml_regression
from experiment import grid
from experiment.config import given_settings, resolve
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig
from experiment.sine_presets import SINE_PRESETS, SineConfig
from tests.conftest import one_line_error
from utils.cli import SWEEP_HELP
from utils.errors import UserError

# Lengths 2 (seed), 3 and 2, seed NOT first in the dict: it is the fastest digit anyway. By hand:
# rank = s + 2 * (m + 3 * u) with s, m, u the indices of seed, meta_lr, update_lr.
THREE = {"meta_lr": [1e-3, 3e-4, 1e-4], "seed": [1, 2], "update_lr": [0.03, 0.1]}
CASES = [  # (choices, rank, the combination)
    (THREE, 0, {"meta_lr": 1e-3, "seed": 1, "update_lr": 0.03}),    # first
    (THREE, 1, {"meta_lr": 1e-3, "seed": 2, "update_lr": 0.03}),    # the seed moves first
    (THREE, 2, {"meta_lr": 3e-4, "seed": 1, "update_lr": 0.03}),
    (THREE, 4, {"meta_lr": 1e-4, "seed": 1, "update_lr": 0.03}),    # 4 = 0 + 2 * 2
    (THREE, 5, {"meta_lr": 1e-4, "seed": 2, "update_lr": 0.03}),
    (THREE, 6, {"meta_lr": 1e-3, "seed": 1, "update_lr": 0.1}),     # 6 = 0 + 2 * (0 + 3 * 1)
    (THREE, 7, {"meta_lr": 1e-3, "seed": 2, "update_lr": 0.1}),     # a middle rank: 1 + 2 * (0 + 3 * 1)
    (THREE, 11, {"meta_lr": 1e-4, "seed": 2, "update_lr": 0.1}),    # last: 1 + 2 * (2 + 3 * 1)
    ({"tasks": [1, 2, 3], "meta_lr": [0.1, 0.2]}, 4, {"tasks": 2, "meta_lr": 0.2}),  # no seed: dict order, 4 = 1 + 3 * 1
    ({"tasks": [1, 2, 3], "meta_lr": [0.1, 0.2]}, 2, {"tasks": 3, "meta_lr": 0.1}),
    ({"seed": 5, "meta_lr": [0.1, 0.2]}, 1, {"seed": 5, "meta_lr": 0.2}),            # a single value: base 1
    ({"seed": [7], "tasks": [1, 2]}, 1, {"seed": 7, "tasks": 2}),                     # a one-element list too
    ({"seed": [1, 2, 3]}, 2, {"seed": 3}),
    ({"update_step": [5, 10], "seed": [1, 2], "tasks": [3, 4]}, 6, {"update_step": 10, "seed": 1, "tasks": 4}),  # 0+2*(1+2*1)
    ({}, 0, {}),
]


@pytest.mark.parametrize("choices, rank, expected", CASES)
def test_combination_follows_the_originals_rule(choices, rank, expected):
    got = grid.combination(choices, rank)
    assert got == expected
    assert list(got) == list(choices)  # keys keep the caller's order


@pytest.mark.parametrize("choices", [THREE, {"tasks": [1, 2, 3], "meta_lr": [0.1, 0.2]}, {"seed": 5}, {}])
def test_size_and_expand_agree(choices):
    combos = grid.expand(choices)
    assert len(combos) == grid.size(choices)
    assert combos == [grid.combination(choices, r) for r in range(grid.size(choices))]
    assert len({tuple(sorted(c.items())) for c in combos}) == len(combos)  # each combination once


def test_expand_is_a_product_with_the_seed_innermost():
    # the same order from another construction: the last factor of a product varies fastest
    expected = [{"meta_lr": m, "seed": s, "update_lr": u}
                for u, m, s in itertools.product(THREE["update_lr"], THREE["meta_lr"], THREE["seed"])]
    assert grid.expand(THREE) == expected
    assert grid.size(THREE) == 12


@pytest.mark.parametrize("rank", [-1, 12, 100])
def test_a_rank_outside_the_grid_is_a_one_line_error(rank):
    with pytest.raises(UserError, match=r"--rank .* is outside the sweep: 12 combinations, so --rank 0 to 11") as err:
        grid.combination(THREE, rank)
    assert "\n" not in str(err.value)


def test_without_lists_only_rank_0_exists():
    assert grid.combination({"seed": 3}, 0) == {"seed": 3}
    with pytest.raises(UserError, match="only --rank 0"):
        grid.combination({"seed": 3, "meta_lr": 1e-4}, 1)


def test_the_swept_settings_are_the_grid():
    assert grid.swept({"seed": [1, 2], "tasks": 3, "meta_lr": [1e-4]}) == {"seed": [1, 2]}


def test_the_digits_are_the_originals_list_flags_in_its_order_then_ours():
    assert oml_omniglot.SWEEP[:5] == ("seed", "tasks", "meta_lr", "update_lr", "update_step")  # class_parser.py
    assert oml_regression.SWEEP[:3] == ("seed", "meta_lr", "update_lr")  # reg_parser.py
    # class_parser_eval.py: --model-path was a list; then ours (--network-seed: the random RLN's seed)
    assert evaluate_omniglot.SWEEP == ("seed", "model", "lr", "network_seed")
    assert evaluate_regression.SWEEP == ("seed", "lr")
    for script in (oml_omniglot, oml_regression):
        assert len(set(script.SWEEP)) == len(script.SWEEP)


# --- the scripts -----------------------------------------------------------------------------------

def _parse(script, argv):
    return script.get_args_parser().parse_args(argv)


def _point(script, argv):
    return script.sweep_point(_parse(script, argv))


TRAINING = {"oml_regression": (oml_regression, SineConfig, SINE_PRESETS, "quick"),
            "oml_omniglot": (oml_omniglot, OmniglotConfig, OMNIGLOT_PRESETS, "cpu")}


@pytest.mark.parametrize("name", sorted(TRAINING))
@pytest.mark.parametrize("rank, seed, meta_lr", [(0, 1, 1e-3), (1, 2, 1e-3), (2, 1, 3e-4), (3, 2, 3e-4)])
def test_training_scripts_resolve_the_ranks_combination(name, rank, seed, meta_lr):
    script, config_cls, presets, preset = TRAINING[name]
    argv = ["--preset", preset, "--seed", "1", "2", "--meta_lr", "1e-3", "3e-4", "--rank", str(rank)]
    args, sweep = _point(script, argv)
    config = script._config(args)
    assert (config.seed, config.meta_lr) == (seed, meta_lr)
    assert sweep == {"rank": rank, "grid": {"seed": [1, 2], "meta_lr": [1e-3, 3e-4]}}
    # every flag not given keeps the preset's value: the same config as the single-valued command
    expected = resolve(config_cls, presets, preset, {"seed": seed, "meta_lr": meta_lr})
    assert dataclasses.asdict(config) == dataclasses.asdict(expected)


def test_the_originals_order_not_the_command_lines_nor_ours():
    # our OmniglotConfig declares update_step before tasks; the original's parser tasks first
    args, _ = _point(oml_omniglot, ["--update_step", "5", "10", "--tasks", "1", "2", "--rank", "1"])
    assert (args.tasks, args.update_step) == (2, 5)
    # our SineConfig declares update_lr before meta_lr; the original's reg_parser meta_lr first
    args, _ = _point(oml_regression, ["--update_lr", "0.1", "0.2", "--meta_lr", "1e-3", "1e-4", "--rank", "1"])
    assert (args.meta_lr, args.update_lr) == (1e-4, 0.1)


def test_the_2020_readme_command_is_rank_0_of_no_sweep():
    argv = ["--update_lr", "0.03", "--meta_lr", "1e-4", "--tasks", "3", "--update_step", "5", "--steps", "700000",
            "--rank", "0"]
    args = _parse(oml_omniglot, argv)
    picked, sweep = oml_omniglot.sweep_point(args)
    assert vars(picked) == vars(args) and sweep == {"rank": 0, "grid": {}}
    assert given_settings(picked, OmniglotConfig) == {"update_lr": 0.03, "meta_lr": 1e-4, "tasks": 3, "update_step": 5,
                                                      "steps": 700000}


def test_a_sweep_point_is_never_taken_for_settings_unpicked():
    args = _parse(oml_regression, ["--seed", "1", "2"])
    with pytest.raises(UserError, match="--seed was given several values"):
        given_settings(args, SineConfig)


EVALUATION = {"evaluate_regression": evaluate_regression, "evaluate_omniglot": evaluate_omniglot}


@pytest.mark.parametrize("name", sorted(EVALUATION))
@pytest.mark.parametrize("rank, seed, lr", [(0, 1, 1e-3), (1, 2, 1e-3), (3, 2, 3e-4)])
def test_evaluation_scripts_resolve_the_ranks_combination(name, rank, seed, lr):
    script = EVALUATION[name]
    args, sweep = _point(script, ["--seed", "1", "2", "--lr", "1e-3", "3e-4", "--rank", str(rank)])
    assert sweep == {"rank": rank, "grid": {"seed": [1, 2], "lr": [1e-3, 3e-4]}}
    if script is evaluate_regression:
        _, config, _ = evaluate_regression._model_and_config(args)
        protocol = evaluate_regression.protocol_from_args(args, config)
    else:
        protocol = evaluate_omniglot._protocol(args)
    assert (protocol.seed, protocol.lr) == (seed, lr)


def test_evaluate_omniglot_sweeps_checkpoints_as_the_originals_model_path():
    args, sweep = _point(evaluate_omniglot, ["--model-path", "a.pt", "b.pt", "--seed", "1", "2", "--rank", "2"])
    assert (args.model, args.seed) == ("b.pt", 1) and sweep["grid"] == {"seed": [1, 2], "model": ["a.pt", "b.pt"]}


@pytest.mark.parametrize("name", sorted(EVALUATION))
def test_evaluation_single_values_parse_as_before(name):
    args = _parse(EVALUATION[name], ["--seed", "3", "--lr", "0.01"])
    assert (args.seed, args.lr, args.rank) == (3, 0.01, 0)
    assert _parse(EVALUATION[name], []).seed is None  # unset: the protocol's own seed


SCRIPTS = {**{k: v[0] for k, v in TRAINING.items()}, **EVALUATION}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_rank_outside_the_sweep_is_a_one_line_error(name, capsys, tmp_path):
    script = SCRIPTS[name]
    flag = "--meta_lr" if name in TRAINING else "--lr"
    argv = ["--seed", "1", "2", flag, "0.1", "0.2", "--rank", "5", "--results-dir", str(tmp_path), "--device", "cpu"]
    err = one_line_error(capsys, script.main, script.get_args_parser(), argv)
    assert "--rank 5 is outside the sweep: 4 combinations, so --rank 0 to 3" in err
    err = one_line_error(capsys, script.main, script.get_args_parser(), ["--rank", "1", "--results-dir", str(tmp_path)])
    assert "only --rank 0" in err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("name", sorted(TRAINING))
@pytest.mark.parametrize("extra, says", [(["--seed", "1", "2"], "--seed 1 2 is a sweep"),
                                         (["--steps", "10", "20"], "--steps 10 20 is a sweep"),
                                         (["--rank", "1"], "--rank 1 selects a sweep point")])
def test_resume_takes_one_value_per_flag(name, extra, says, capsys, tmp_path):
    script = TRAINING[name][0]
    argv = ["--resume", str(tmp_path / "nowhere"), "--device", "cpu", *extra]
    err = one_line_error(capsys, script.main, script.get_args_parser(), argv)
    assert "--resume continues one run" in err
    assert says in err


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_says_which_flags_sweep(name):
    script = SCRIPTS[name]
    parser = script.get_args_parser()
    helps = {a.dest: a.help for a in parser._actions}
    for dest in script.SWEEP:
        assert helps[dest].endswith(SWEEP_HELP), dest
    assert "--seed varies fastest" in helps["rank"]
    others = [a for a in parser._actions if a.dest not in script.SWEEP and a.help and SWEEP_HELP in a.help]
    assert not others, [a.dest for a in others]


def test_a_tiny_sweep_point_trains_as_its_single_valued_command(tmp_path):
    tiny = ["--preset", "oml2020", "--width", "16", "--steps", "10", "--eval-runs", "0", "--no-progress",
            "--log-every", "5", "--save-every", "10", "--device", "cpu"]
    swept = oml_regression.main(_parse(oml_regression, [*tiny, "--results-dir", str(tmp_path / "a"),
                                                        "--seed", "1", "2", "--rank", "1"]))
    config = json.loads((swept / "config.json").read_text())
    metadata = json.loads((swept / "metadata.json").read_text())
    assert config["seed"] == 2 and metadata["seed"] == 2
    assert metadata["sweep"] == {"rank": 1, "grid": {"seed": [1, 2]}}
    single = oml_regression.main(_parse(oml_regression, [*tiny, "--results-dir", str(tmp_path / "b"), "--seed", "2"]))
    assert (swept / "config.json").read_bytes() == (single / "config.json").read_bytes()
    assert (swept / "metrics.jsonl").read_bytes() == (single / "metrics.jsonl").read_bytes()
    assert json.loads((single / "metadata.json").read_text())["sweep"] == {"rank": 0, "grid": {}}
