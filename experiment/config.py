"""Configurations as dataclasses: defaults, then a named preset, then explicit flags.

The resolved config is stored in every checkpoint, so evaluation rebuilds the model and the
data layout from the checkpoint alone.
"""
import dataclasses

from utils.errors import UserError


def resolve(config_cls, presets: dict, preset: str, overrides: dict):
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(sorted(presets))})")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    chosen = {k: v for k, v in overrides.items() if v is not None and k in fields}
    config = config_cls(**{**presets[preset], **chosen, "preset": preset})
    config.validate()
    return config


def from_dict(config_cls, data: dict):
    """Rebuild a config stored in a checkpoint; unknown keys are an error, not silently dropped."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(data) - fields
    if unknown:
        raise UserError(f"checkpoint config has keys this code does not know: {sorted(unknown)}")
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def as_dict(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
