"""The training loop every method shares: steps, progress bar, metrics log, atomic periodic
checkpoints with everything needed to resume exactly (weights, optimiser, scheduler, RNG).

Resume refuses, before writing anything, what would damage or mislead: flags that contradict
the run's config, a config lacking a setting (it would continue with today's default), weights
that do not fit the config's network, a weights-only checkpoint, a folder another process is
training, `--steps` below the run's count. Under the run's lock it then removes temp files of killed writes and
cuts metrics.jsonl back to the checkpoint's step (a half-written last line included).
"""
import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from torch import nn
from tqdm import tqdm

from experiment import limits
from experiment import lock as run_lock
from experiment.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from experiment.config import as_dict, missing_fields
from experiment.omniglot_presets import build_model as build_omniglot
from experiment.run import Run, read_metadata, repair_log
from experiment.sine_presets import build_model as build_sine
from utils.errors import Interrupted, UserError
from utils.files import remove_orphans
from utils.messages import note
from utils.seeding import capture_rng_state, restore_rng_state

DEFAULT_INTERVALS = limits.DEFAULT_INTERVALS
DEFAULT_HINT = "lower --meta_lr or --update_lr"
# A loss this many times the untrained network's (the first step's loss before any update, or its
# meta-loss before the inner loop) has left any sane range: a finite 5.8e25 is as diverged as nan.
DIVERGED_FACTOR = 1e6


@runtime_checkable
class TrainingTask(Protocol):
    """What `fit` trains: every method of both benchmarks (experiment/training/omniglot.py, sine.py).
    Optional: `export()` -> the nn.Module to checkpoint when it is not `model` (sine pretraining's
    representation), `divergence_hint`, the advice printed when the loss is not finite, and
    `stuck()` -> why the run can no longer learn (a dead representation), or None."""

    model: nn.Module        # its state_dict is checkpointed
    rng: np.random.Generator  # the data stream; its state is checkpointed and restored on resume

    def step(self) -> dict[str, float]:
        """One training step; returns its metrics, "loss" among them."""

    def training_state(self) -> dict:
        """What resume needs beyond the weights and the rng (optimiser, counters)."""

    def load_training_state(self, state: dict) -> None: ...


def intervals(args, payload: dict | None = None) -> dict:
    """Flags first, then what the resumed run used, then the defaults (a flag of 0 is refused by
    experiment.limits.training_intervals, not taken as unset)."""
    saved = (payload or {}).get("training", {}).get("intervals", {})
    chosen = {}
    for key, default in DEFAULT_INTERVALS.items():
        given = getattr(args, key, None)
        chosen[key] = given if given is not None else saved.get(key) or default
    return chosen


def save_training(run, task: TrainingTask, *, benchmark: str, config: dict, step: int, intervals: dict) -> None:
    training = {**task.training_state(), "rng": capture_rng_state(task.rng), "intervals": intervals}
    model = task.export() if hasattr(task, "export") else task.model
    save_checkpoint(run.dir / CHECKPOINT_NAME, benchmark=benchmark, config=config, model=model,
                    step=step, training=training)


# Flags every training script takes on --resume: they choose where and how, not what, is trained.
RESUME_FLAGS = frozenset({"resume", "steps", "device", "tf32", "progress"})


def conflicting_flags(given: dict, run_values: dict, allowed) -> list[str]:
    """'--flag value (the run has X)' for every given flag that --resume cannot honour: not in
    `allowed` and either not a setting of the run or different from the run's value. `given`
    maps dest -> (flag, value[, as typed]) with the value in the config's terms."""
    conflicts = []
    for dest, (flag, value, *typed) in sorted(given.items()):
        if dest in allowed:
            continue
        if dest not in run_values:
            conflicts.append(f"{flag} (a resumed run keeps its folder and config)")
            continue
        mine, theirs = value, run_values[dest]
        if isinstance(mine, tuple):
            mine = list(mine)
        if mine != theirs:
            conflicts.append(f"{flag} {typed[0] if typed else value} (the run has {theirs})")
    return conflicts


def check_resume(resume: str, *, benchmark: str, config_from_checkpoint, given: dict, allowed):
    """(payload, config) of a killed run, its config extended by `--steps`; writes nothing.
    `given`: the explicit flags ({dest: (flag, value)}, utils.cli.explicit_args); `allowed`:
    those that may differ from the run."""
    payload = load_checkpoint(resume, benchmark=benchmark)
    path = Path(payload["path"])
    folder = path.parent
    if "training" not in payload:
        raise UserError(f"'{path}' holds weights only (no optimiser or RNG state), so it cannot be resumed; "
                        "resume a run folder written by training, or start a new run")
    if not (folder / "config.json").is_file():
        raise UserError(f"'{folder}' is not a run folder (no config.json next to {path.name}); resume the run "
                        "folder training wrote")
    config = config_from_checkpoint(payload)
    lacking = missing_fields(type(config), payload["config"])
    if lacking:
        raise UserError(f"'{path}' cannot be resumed: its config lacks {', '.join(lacking)}, so the run would continue "
                        "with today's defaults instead of the values it was trained with; start a new run")
    limits.checkpoint_network(config, payload)
    missing, unexpected = _state_keys(config, payload)
    if missing or unexpected:
        raise UserError(f"'{path}' does not fit the network its config describes: "
                        + "; ".join(f"{what} {', '.join(keys[:3])}" for what, keys in
                                    (("missing", missing), ("unexpected", unexpected)) if keys))
    saved_intervals = payload["training"].get("intervals", {})
    conflicts = conflicting_flags(given, {**as_dict(config), **saved_intervals}, allowed)
    if conflicts:
        shown = ", ".join("--" + {"progress": "no-progress"}.get(a, a).replace("_", "-") for a in sorted(allowed - {"resume"}))
        raise UserError(f"--resume continues '{folder}' with its own settings; these flags contradict them: "
                        f"{'; '.join(conflicts)} (on --resume only {shown} may be given)")
    done = payload["step"]
    if "steps" in given:
        steps = given["steps"][1]
        if steps < done:
            raise UserError(f"--steps {steps} is below the step this run reached ({done}); --steps on --resume "
                            f"can only extend it (to at least {config.steps})")
        if steps < config.steps:
            raise UserError(f"--steps {steps} is below this run's {config.steps} steps (it is at step {done}); "
                            f"--steps on --resume can only extend a run")
        config.steps = steps
    read_metadata(folder)  # a damaged metadata.json is refused here, before any write
    return payload, config


def _state_keys(config, payload) -> tuple[list, list]:
    """(names missing or misshapen, unexpected names) of the state_dict against the config's
    network; after the parameter count was compared, building it costs no more than the weights."""
    build = {"sine": build_sine, "omniglot": build_omniglot}[payload["benchmark"]]
    expected = {k: tuple(v.shape) for k, v in build(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in payload["state_dict"].items()}
    missing = sorted(k for k in expected if got.get(k) != expected[k])
    return missing, sorted(set(got) - set(expected))


def open_resumed(payload: dict, config, device) -> Run:
    """The run folder of a checked payload, locked (run.lock, released by Run.close), cleared of
    temp files of killed writes, its metrics log cut back to the checkpoint, reopened."""
    folder = Path(payload["path"]).parent
    lock = run_lock.acquire(folder)
    try:
        removed = remove_orphans(folder)
        if removed:
            note(f"removed {len(removed)} temp file(s) of writes cut short by a kill: {', '.join(removed)}")
        repair_log(folder, payload["step"])
        run = Run(folder, as_dict(config), device, resumed=True)
    except BaseException:
        run_lock.release(lock)
        raise
    run.lock = lock
    return run


def restore_training(task: TrainingTask, payload: dict) -> int:
    task.model.load_state_dict(payload["state_dict"])
    task.load_training_state(payload["training"])
    restore_rng_state(payload["training"]["rng"], task.rng)
    return payload["step"]


def fit(task: TrainingTask, run, *, benchmark: str, config: dict, start_step: int, total_steps: int,
        log_every: int = 50, save_every: int = 1000, progress: bool | None = None) -> None:
    """Run steps start_step+1..total_steps. Logged values are means over each log window; the
    checkpoint interval is a multiple of the log interval, so a resumed run logs the same lines."""
    save_every = max(log_every, save_every // log_every * log_every)
    chosen = {"log_every": log_every, "save_every": save_every}
    window: dict[str, list] = {}
    bar = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps,
               disable=None if progress is None else not progress, desc=f"{config.get('method', '')} {benchmark}")
    saved = start_step if start_step > 0 else None  # a resumed run starts from its checkpoint
    limit = None
    try:
        for step in bar:
            metrics = task.step()
            if limit is None:  # the first step's loss before any update: the network as it started
                limit = DIVERGED_FACTOR * max(1.0, metrics.get("meta_loss_before", metrics["loss"]))
            kept = "no checkpoint was written yet" if saved is None else f"the checkpoint of step {saved} is kept"
            if not math.isfinite(metrics["loss"]) or metrics["loss"] > limit:
                loss = metrics["loss"]
                what = (f"became {loss}" if not math.isfinite(loss) else
                        f"reached {loss:.3g}, over {DIVERGED_FACTOR:.0e} times the starting network's,")
                raise UserError(f"training diverged: the loss {what} at step {step + 1} "
                                f"({kept}; {getattr(task, 'divergence_hint', DEFAULT_HINT)})")
            if hasattr(task, "stuck") and (why := task.stuck()):
                raise UserError(f"training cannot recover: {why} at step {step + 1} ({kept})")
            for key, value in metrics.items():
                window.setdefault(key, []).append(value)
            done = step + 1
            if done % log_every == 0 or done == total_steps:
                record = {key: round(float(np.mean(values)), 8) for key, values in window.items()}
                run.log({"step": done, **record})
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                window = {}
            if done % save_every == 0 or done == total_steps:
                save_training(run, task, benchmark=benchmark, config=config, step=done, intervals=chosen)
                saved = done
    except KeyboardInterrupt as err:
        bar.close()
        cause = f"{err}; " if str(err) else ""  # "SIGTERM received" (experiment.lock.Terminated); Ctrl-C says nothing
        if saved is None:
            raise Interrupted(f"{cause}no checkpoint was written yet (the first comes at step "
                              f"{min(save_every, total_steps)}), so '{run.dir}' cannot be resumed; start the run again") from None
        raise Interrupted(f"{cause}the checkpoint of step {saved} is kept; continue with --resume {run.dir}") from None
    bar.close()
