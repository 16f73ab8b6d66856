"""Configurations as dataclasses: defaults, then a named preset, then explicit flags.

Each field is declared once (`setting`): its default, its command-line spellings and its help.
`add_flags` derives the parser's arguments from the fields, every one with the default
argparse.SUPPRESS, so the parsed namespace holds only the flags actually given; `given_settings`
reads exactly those and `resolve` applies exactly those on top of the preset. An unset flag
therefore never overrides a preset (a None default once did: it hid the preset's clamp).

A flag of a plain (not bool, not tuple) field takes one or more values: one is stored as
before, several as a list, a sweep whose --rank-th combination the script picks
(experiment.grid.select) before `given_settings` reads the namespace.

The resolved config is stored in every checkpoint, so evaluation rebuilds the model and the
data layout from the checkpoint alone.
"""
import argparse
import dataclasses
import types
import typing

from utils import bounds
from utils.cli import explicit_args, one_or_more
from utils.errors import UserError

NONE_WORDS = ("none", "off")  # with the number 0, what a None-able setting's flag takes for None


def setting(default, *flags, help: str, choices=None, off_flags=(), off_help=None, none_word="none", item=int):
    """A config field and its command line, declared together.

    flags: the spellings, the first one named in messages (the original's spellings kept as
    aliases); none: the field is set by presets only. help: what the field holds (required, flag
    or not). A bool field's `flags` set it True and its `off_flags` False (one or the other, not
    both); a tuple field takes one or more `item`s; a None-able field (`int | None`) takes 0,
    'none' or 'off' for None, shown as `none_word` in messages."""
    return dataclasses.field(default=default, metadata={
        "flags": flags, "help": help, "choices": choices, "off_flags": off_flags,
        "off_help": off_help or f"the opposite of {flags[0] if flags else 'the default'}",
        "none_word": none_word, "item": item})


def _value_type(annotation):
    """(the type one value parses to, whether None is allowed): `float | None` -> (float, True)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0], len(kinds) < len(typing.get_args(annotation))
    return annotation, False


def _none_or(kind):
    def parse(text: str):
        if text.strip().lower() in NONE_WORDS:
            return None
        value = kind(text)
        return None if value == 0 else value
    parse.__name__ = kind.__name__  # argparse names it in "invalid float value: 'x'"
    return parse


class _StoreTuple(argparse.Action):
    """nargs values stored as a tuple: the namespace holds the value in the config's terms."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, tuple(values))


def add_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """An argument for every field that has flags, in field order, defaulting to SUPPRESS."""
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        if not meta.get("flags"):
            continue
        common = dict(dest=field.name, default=argparse.SUPPRESS)
        if field.type is bool:
            group = parser.add_mutually_exclusive_group() if meta["off_flags"] else parser  # together, the last won
            group.add_argument(*meta["flags"], action="store_const", const=True, help=meta["help"], **common)
            if meta["off_flags"]:
                group.add_argument(*meta["off_flags"], action="store_const", const=False, help=meta["off_help"], **common)
        elif field.type is tuple:
            parser.add_argument(*meta["flags"], nargs="+", type=meta["item"], action=_StoreTuple, help=meta["help"],
                                metavar=field.name.upper(), **common)
        else:  # one or more values: several are a sweep, --rank picks one combination
            kind, nullable = _value_type(field.type)
            parser.add_argument(*meta["flags"], type=_none_or(kind) if nullable else kind, choices=meta["choices"],
                                **one_or_more(meta["help"]), **common)


def sweepable(config_cls) -> tuple:
    """The fields whose flags take one or more values (add_flags), in field order."""
    return tuple(f.name for f in dataclasses.fields(config_cls)
                 if f.metadata.get("flags") and f.type is not bool and f.type is not tuple)


def given_settings(args: argparse.Namespace, config_cls) -> dict:
    """{field: value} of the config's flags given on the command line (the others are absent).
    A sweep's lists must have been reduced to one combination first (experiment.grid.select)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    several = [k for k, v in given.items() if isinstance(v, list)]
    if several:
        raise UserError(f"--{several[0]} was given several values, a sweep: pick one combination (--rank) first")
    return given


def given_flags(args: argparse.Namespace, parser: argparse.ArgumentParser, config_cls) -> dict:
    """Every explicit flag as {dest: (flag, value[, as typed])} (utils.cli.explicit_args), the
    config's in its terms: a None-able setting turned off shows as typed (`--inner-clip 0`)."""
    given = explicit_args(args, parser)
    for field in dataclasses.fields(config_cls):
        if field.name in given and given[field.name][1] is None:
            flag, value = given[field.name]
            given[field.name] = (flag, value, field.metadata["none_word"])
    return given


def resolve(config_cls, presets: dict, preset: str, overrides: dict):
    """The preset's config with exactly `overrides` on top (a None in it is a value: no clamp, no split)."""
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(sorted(presets))})")
    config = config_cls(**{**presets[preset], **overrides, "preset": preset})
    config.validate()
    return config


def from_dict(config_cls, data: dict):
    """Rebuild a config stored in a checkpoint, held to the flags' checks before a network of its
    sizes is built: unknown keys are an error (not silently dropped), every value must have its
    field's type (an image size of 28.5 or a width of "x" is refused, not passed on to torch), and
    the config's `validate()` bounds apply. A field it lacks takes today's default (a checkpoint
    written before the field existed); `missing_fields` names them, for callers that must not."""
    if not isinstance(data, dict):
        raise UserError(f"the checkpoint's config is a {type(data).__name__}, not a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise UserError(f"checkpoint config has keys this code does not know: {sorted(unknown, key=str)}")
    for name, value in data.items():
        problem = _type_problem(fields[name], value)
        if problem:
            raise UserError(f"the checkpoint's config holds {name} = {value!r}, {problem}")
    config = config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    try:
        config.validate()
    except UserError as err:
        raise UserError(f"the checkpoint's config holds a value its flag would refuse: {err}") from None
    return config


def _type_problem(field, value) -> str | None:
    """Why `value` cannot be `field`'s (None: it can): bool is not an int here, an int is a float."""
    kind, nullable = _value_type(field.type)
    if value is None:
        return None if nullable else "but this setting cannot be none"
    if kind is tuple:
        item = field.metadata["item"]
        ok = isinstance(value, (list, tuple)) and all(_is(v, item) for v in value)
        return None if ok else f"not a list of {item.__name__}s"
    if not _is(value, kind):
        return f"not {'an' if kind is int else 'a'} {kind.__name__}"
    choices = field.metadata.get("choices")
    if choices and value not in choices:
        return f"not one of {', '.join(map(str, choices))}"
    return None


def _is(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def missing_fields(config_cls, data: dict) -> list[str]:
    """The fields a stored config lacks (from_dict fills them with today's defaults)."""
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in data]


def sweep_members(args: argparse.Namespace, grid: dict):
    """`args` (one sweep point, experiment.grid.select) with each value of each list-valued flag
    swapped in, one at a time: a script checks every one as it checks a single value, so a bad
    member (`--update_lr 0.1 nan`, `--steps 3 0`) is refused whichever --rank runs, before the
    run records the whole grid."""
    for name, values in grid.items():
        for value in values:
            yield argparse.Namespace(**{**vars(args), name: value})


def as_dict(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def check_counts(config, names) -> None:
    """Each named field is an integer of at least 1 (the message names the hyphenated flag)."""
    for name in names:
        bounds.at_least(f"--{name.replace('_', '-')}", getattr(config, name))


def check_rates(config, names) -> None:
    """Each named field is > 0 and finite: inf and nan would only diverge."""
    for name in names:
        bounds.positive_finite(f"--{name}", getattr(config, name))
