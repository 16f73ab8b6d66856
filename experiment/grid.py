"""Sweeps: settings given several values, and `--rank i`, the i-th combination of them.

The 2020 code let many flags take a list and ran one combination per process, chosen by its
rank (`get_run`, HEAD:utils/utils.py:289-325). We number the combinations as it did, so the
seed README's cluster commands give the same run for the same rank:

* The rank is a mixed-radix number whose digits index the settings' value lists. `seed` is the
  least significant digit wherever it stands on the command line; the other settings follow in
  the original parser's declaration order (its `vars(args)` order), then the settings the
  original did not have as lists, in the order this script declares them (`ORIGINAL_ORDER`).
* A digit's base is its setting's number of values; a single value is a base of 1 and changes
  nothing. So with bases n_0 (seed), n_1, n_2, ... the value index of setting j is
  (rank // (n_0 * n_1 * ... * n_{j-1})) % n_j, and the seed varies fastest:
  `--seed 1 2 --meta_lr a b c` gives, for ranks 0..5, (1,a) (2,a) (1,b) (2,b) (1,c) (2,c).
* The number of combinations is the product of the bases; the valid ranks are 0 to that minus 1
  (the original wrapped a larger rank round silently; here it is an error).

A parsed flag holds its value when given once and a list when given several values (a list in
the namespace is a sweep); an unset flag is absent, so a sweep never overrides a preset with
anything but the values given. Each run records {"rank", "grid"} (`select`), the grid being the
settings given several values, so an aggregator can group a sweep's runs.
"""
import argparse
import math

from utils.errors import UserError

SEED = "seed"  # the setting the original varies fastest

# The original's list-valued flags (besides --seed), in its parsers' declaration order (HEAD:
# configs/classification/class_parser.py, class_parser_eval.py, configs/regression/reg_parser.py;
# the original evaluate_regression.py had no --rank). The original's --plasticity-lr and
# --modulation-lr have no counterpart here, and its evaluation's --schedule keeps our meaning (the
# class counts of one evaluation: `--schedule 10 50` is one run of 10 and 50 classes).
ORIGINAL_ORDER = {
    "oml_omniglot": ("tasks", "meta_lr", "update_lr", "update_step"),
    "oml_regression": ("meta_lr", "update_lr"),
    "evaluate_omniglot": ("model",),
    "evaluate_regression": (),
}

RANK_HELP = ("which combination to run when flags are given several values (a sweep), counted from 0: --seed varies "
             "fastest, then the other flags in the original's order (experiment/grid.py); default 0")


def _as_list(values) -> list:
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _digits(choices: dict) -> list:
    """The setting names as digits, least significant first: seed, then the rest in dict order."""
    return ([SEED] if SEED in choices else []) + [name for name in choices if name != SEED]


def size(choices: dict) -> int:
    """How many combinations: the product of the numbers of values (1 for no settings)."""
    return math.prod(len(_as_list(values)) for values in choices.values())


def combination(choices: dict, rank: int) -> dict:
    """The rank-th combination, {setting: one value}, in the original's order (see the module doc)."""
    total = size(choices)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < total:
        if total == 1:
            raise UserError(f"--rank {rank} is outside the sweep: no flag was given several values, so only --rank 0")
        raise UserError(f"--rank {rank} is outside the sweep: {total} combinations, so --rank 0 to {total - 1}")
    chosen = {}
    rest = rank
    for name in _digits(choices):
        values = _as_list(choices[name])
        rest, index = divmod(rest, len(values))
        chosen[name] = values[index]
    return {name: chosen[name] for name in choices}  # the caller's order, not the digits'


def expand(choices: dict) -> list:
    """Every combination, the list index being its rank."""
    return [combination(choices, rank) for rank in range(size(choices))]


def swept(choices: dict) -> dict:
    """{setting: its values} of the settings given more than one value: the grid a run records."""
    return {name: list(values) for name, values in choices.items() if len(_as_list(values)) > 1}


def order(script: str, sweepable) -> tuple:
    """The settings that may take lists, as digits: the original's order first, then `sweepable`'s."""
    first = (SEED, *ORIGINAL_ORDER[script])
    return (*first, *(name for name in sweepable if name not in first))


def choices_of(args: argparse.Namespace, names) -> dict:
    """{setting: value or values} of `names` present in the namespace, in `names`' order (the
    namespace's own order is the command line's, which must not change the numbering)."""
    present = vars(args)
    return {name: present[name] for name in names if name in present}


def select(args: argparse.Namespace, names) -> tuple:
    """(a copy of args holding the args.rank-th combination of `names`, {"rank", "grid"} for the
    run's metadata). Out-of-range ranks are a one-line UserError."""
    choices = choices_of(args, names)
    rank = getattr(args, "rank", 0)
    picked = argparse.Namespace(**vars(args))
    for name, value in combination(choices, rank).items():
        setattr(picked, name, value)
    return picked, {"rank": rank, "grid": swept(choices)}


def refuse_sweep(args: argparse.Namespace, names, why: str) -> None:
    """A UserError when any of `names` has several values or --rank is not 0: `why` says what
    runs one combination only (a resumed run)."""
    grid = swept(choices_of(args, names))
    if grid:
        flags = ", ".join(f"--{name} {' '.join(str(v) for v in values)}" for name, values in grid.items())
        raise UserError(f"{why}: give each flag one value ({flags} is a sweep)")
    if getattr(args, "rank", 0) != 0:
        raise UserError(f"{why}: --rank {args.rank} selects a sweep point (drop it)")
