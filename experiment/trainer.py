"""The training loop every method shares: steps, progress bar, metrics log, atomic periodic
checkpoints with everything needed to resume exactly (weights, optimiser, scheduler, RNG)."""
import math

import numpy as np
from tqdm import tqdm

from pathlib import Path

from experiment.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from experiment.run import Run
from model.config import as_dict
from utils.errors import UserError
from utils.seeding import capture_rng_state, restore_rng_state


DEFAULT_INTERVALS = {"log_every": 50, "save_every": 1000}
DEFAULT_HINT = "lower --meta_lr or --update_lr"


def intervals(args, payload: dict | None = None) -> dict:
    """Flags first, then what the resumed run used, then the defaults."""
    saved = (payload or {}).get("training", {}).get("intervals", {})
    return {key: getattr(args, key, None) or saved.get(key) or default for key, default in DEFAULT_INTERVALS.items()}


def save_training(run, task, *, benchmark: str, config: dict, step: int, intervals: dict) -> None:
    training = {**task.training_state(), "rng": capture_rng_state(task.rng), "intervals": intervals}
    model = task.export() if hasattr(task, "export") else task.model
    save_checkpoint(run.dir / CHECKPOINT_NAME, benchmark=benchmark, config=config, model=model,
                    step=step, training=training)


def reopen_run(resume: str, *, benchmark: str, config_from_checkpoint, steps: int | None, device):
    """(payload, config, run) of a killed run: its checkpoint, its config (`--steps` may extend
    it), and its folder, reopened for appending."""
    payload = load_checkpoint(resume, benchmark=benchmark)
    config = config_from_checkpoint(payload)
    if steps is not None:
        config.steps = steps
    folder = Path(resume) if Path(resume).is_dir() else Path(resume).parent
    return payload, config, Run(folder, as_dict(config), device, resumed=True)


def restore_training(task, payload: dict) -> int:
    task.model.load_state_dict(payload["state_dict"])
    task.load_training_state(payload["training"])
    restore_rng_state(payload["training"]["rng"], task.rng)
    return payload["step"]


def fit(task, run, *, benchmark: str, config: dict, start_step: int, total_steps: int,
        log_every: int = 50, save_every: int = 1000, progress: bool | None = None) -> None:
    """Run steps start_step+1..total_steps. Logged values are means over each log window; the
    checkpoint interval is a multiple of the log interval, so a resumed run logs the same lines."""
    save_every = max(log_every, save_every // log_every * log_every)
    chosen = {"log_every": log_every, "save_every": save_every}
    window: dict[str, list] = {}
    bar = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps,
               disable=None if progress is None else not progress, desc=f"{config.get('method', '')} {benchmark}")
    for step in bar:
        metrics = task.step()
        if not math.isfinite(metrics["loss"]):
            raise UserError(f"training diverged: the loss became {metrics['loss']} at step {step + 1} "
                            f"(the last good checkpoint is kept; {getattr(task, 'divergence_hint', DEFAULT_HINT)})")
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
    bar.close()
