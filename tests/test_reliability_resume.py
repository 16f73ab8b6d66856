"""Resume and export never damage or mislead a run (experiment/training/loop.py, run.py, lock.py,
export.py, the two training scripts, utils/cli.py).

A killed tiny sine run (checkpoint at step 4 of 8) is copied per test. Refusals: exit 2, one
`error:` line naming the problem, and not a byte of the run folder changed. Repairs (partial
metrics line, orphan temp file, stale lock, old checkpoint format): the resumed run ends
byte-identical to an uninterrupted one.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import oml_omniglot
import oml_regression
from experiment import export
from experiment.checkpoint import DIGEST, weights_digest
from experiment.lock import LOCK_NAME
from experiment.training import sine
from tests.conftest import REPO, ctrl_c_restored, one_line_error
from tests.omniglot_fixtures import write_fake_both
from utils.cli import run_main

TINY = ["--preset", "oml2020", "--width", "16", "--steps", "8", "--eval-runs", "0", "--no-progress",
        "--log-every", "2", "--save-every", "4"]


def _train(folder, *extra):
    return oml_regression.main(oml_regression.get_args_parser().parse_args(TINY + ["--results-dir", str(folder), *extra]))


def _dying_step(at):
    original, calls = sine.OMLTraining.step, {"n": 0}

    def step(self):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return original(self)
    return step


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    whole = _train(root / "whole")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sine.OMLTraining, "step", _dying_step(7))  # killed between the checkpoints at 4 and 8
        with pytest.raises(KeyboardInterrupt):
            _train(root / "killed")
    killed = next((root / "killed").glob("*/sine/*"))
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 4
    return {"whole": whole, "killed": killed}


@pytest.fixture
def killed(runs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(runs["killed"], copy)
    return copy


def _snapshot(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


_refused = one_line_error


def _resume(run, *extra):
    return run_main(oml_regression.main, oml_regression.get_args_parser(), ["--resume", str(run), *extra])


# --- refusals: nothing written -------------------------------------------------------------------

CONFLICTS = [
    (["--preset", "quick"], "--preset quick (the run has oml2020)"),
    (["--method", "srnn"], "--method srnn (the run has oml)"),
    (["--update_lr", "0.1"], "--update_lr 0.1 (the run has 0.003)"),
    (["--seed", "3"], "--seed 3 (the run has 90)"),
    (["--width", "32"], "--width 32 (the run has 16)"),
    (["--inner-clip", "0"], "--inner-clip 0 (the run has 10.0)"),
    (["--name", "other"], "--name (a resumed run keeps its folder and config)"),
    (["--results-dir", "elsewhere"], "--results-dir (a resumed run keeps"),
    (["--log-every", "3"], "--log-every 3 (the run has 2)"),
    (["--seed", "3", "--width", "32"], "--seed 3 (the run has 90); --width 32 (the run has 16)"),
    (["--steps", "3"], "--steps 3 is below the step this run reached (4)"),
    (["--steps", "6"], "--steps 6 is below this run's 8 steps"),
]


@pytest.mark.parametrize("argv, message", CONFLICTS, ids=[" ".join(a) for a, _ in CONFLICTS])
def test_contradicting_flags_are_refused(killed, capsys, argv, message):
    before = _snapshot(killed)
    err = _refused(capsys, oml_regression.main, oml_regression.get_args_parser(), ["--resume", str(killed), *argv])
    assert message in err, err
    assert _snapshot(killed) == before


def _weights_only(run):
    export.main(export.get_args_parser().parse_args([str(run), str(run.parent / "w.pt")]))
    os.replace(run.parent / "w.pt", run / "checkpoint.pt")


def _live_lock(run):
    (run / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))


def _bad_metadata(run):
    (run / "metadata.json").write_text('{"argv": ["oml_regr')


def _bad_middle_line(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(["{garbage", *lines[1:]]) + "\n")


def _rewrite_checkpoint(change):
    def damage(run):
        payload = torch.load(run / "checkpoint.pt", weights_only=True)
        change(payload)
        torch.save(payload, run / "checkpoint.pt")
    return damage


def _drop(*keys):
    return _rewrite_checkpoint(lambda p: [p["config"].pop(k) for k in keys])


def _no_key(digest: bool):
    def change(payload):
        payload["state_dict"].pop("pln.0.bias")
        if not digest:
            payload.pop(DIGEST)
    return _rewrite_checkpoint(change)


def _renamed(payload):
    payload["state_dict"]["pln.0.shift"] = payload["state_dict"].pop("pln.0.bias")
    payload.pop(DIGEST)


def _nan_weights(payload):
    payload["state_dict"]["rln.0.weight"][0, 0] = float("nan")
    payload[DIGEST] = weights_digest(payload["state_dict"])  # consistent: the finiteness check must catch it


BROKEN = [
    ("weights-only checkpoint", _weights_only, "holds weights only"),
    # it used to continue with today's defaults and rewrite config.json
    ("config lacking the rates", _drop("update_lr", "meta_lr"), "its config lacks update_lr, meta_lr"),
    ("config lacking one setting", _drop("inner_clip"), "its config lacks inner_clip"),
    # it used to rewrite config.json and metadata.json before its traceback
    ("state_dict missing a key", _no_key(digest=False), "does not fit the network its config describes"),
    ("state_dict with a renamed key", _rewrite_checkpoint(_renamed),
     "does not fit the network its config describes: missing pln.0.bias; unexpected pln.0.shift"),
    ("state_dict missing a key, digest kept", _no_key(digest=True), "its weights differ from the SHA-256 recorded"),
    ("non-finite weights", _rewrite_checkpoint(_nan_weights), "holds non-finite weights (nan or inf in rln.0.weight)"),
    ("config out of bounds", _rewrite_checkpoint(lambda p: p["config"].update(width=-1)), "--width must be at least 1"),
    ("locked by a live process", _live_lock, f"is in use by pid {os.getpid()} on {socket.gethostname()}"),
    ("damaged metadata.json", _bad_metadata, "metadata.json' is damaged"),
    ("damaged metrics line", _bad_middle_line, "line 1 of"),
]


@pytest.mark.parametrize("damage, message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_unresumable_folder_is_refused_untouched(killed, capsys, damage, message):
    damage(killed)
    before = _snapshot(killed)
    err = _refused(capsys, oml_regression.main, oml_regression.get_args_parser(), ["--resume", str(killed)])
    assert message in err, err
    assert _snapshot(killed) == before


def test_shipped_weights_only_checkpoint_is_refused_before_writing(tmp_path, capsys):
    shipped = tmp_path / "trained_models"
    shipped.mkdir()
    shutil.copy(REPO / "trained_models" / "sine_quick_oml.pt", shipped)
    err = _refused(capsys, oml_regression.main, oml_regression.get_args_parser(),
                   ["--resume", str(shipped / "sine_quick_oml.pt")])
    assert "holds weights only" in err
    assert sorted(p.name for p in shipped.iterdir()) == ["sine_quick_oml.pt"]


# --- repairs: the resumed run equals the uninterrupted one ---------------------------------------

def _partial_line(run):
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"loss": 0.5, "st')  # killed mid-write


def _orphan(run):
    (run / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")


def _stale_lock(run):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is dead now
    (run / LOCK_NAME).write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "since": "then"}))


def _old_format(run):  # written before the Python `random` state was dropped
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    state = random.getstate()
    payload["training"]["rng"]["python"] = (state[0], list(state[1]), state[2])
    torch.save(payload, run / "checkpoint.pt")


REPAIRS = [
    ("partial last metrics line", _partial_line, [], "dropping the unfinished last line"),
    ("orphan temp file", _orphan, [], "removed 1 temp file(s)"),
    ("stale lock", _stale_lock, [], "taking over the stale lock"),
    ("old checkpoint format", _old_format, [], ""),
    ("flags equal to the run's", lambda run: None, ["--preset", "oml2020", "--width", "16", "--log-every", "2"], ""),
]


@pytest.mark.parametrize("damage, flags, note", [r[1:] for r in REPAIRS], ids=[r[0] for r in REPAIRS])
def test_resume_repairs_and_equals_the_uninterrupted_run(runs, killed, capsys, damage, flags, note):
    damage(killed)
    capsys.readouterr()
    _resume(killed, *flags)
    err = capsys.readouterr().err
    assert note in err and not [line for line in err.splitlines() if line.startswith(("error", "warning"))], err
    whole = runs["whole"]
    assert (killed / "checkpoint.pt").read_bytes() == (whole / "checkpoint.pt").read_bytes()
    assert (killed / "metrics.jsonl").read_bytes() == (whole / "metrics.jsonl").read_bytes()
    assert not list(killed.glob(".*.tmp")) and not (killed / LOCK_NAME).exists()


def test_steps_extend_a_run(killed):
    _resume(killed, "--steps", "10")
    assert json.loads((killed / "config.json").read_text())["steps"] == 10
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 10
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10]


# --- one writer per run folder -------------------------------------------------------------------

def test_a_finished_run_extended_by_resume_is_unfinished_until_it_finishes_again(runs, tmp_path, monkeypatch):
    """`--resume RUN --steps MORE` on a finished run: while the new steps run (or if they are
    killed), metadata.json must not still say train_finished, or anything waiting on it would
    take the half-extended checkpoint for the final one."""
    run = tmp_path / "run"
    shutil.copytree(runs["whole"], run)
    finished = lambda: json.loads((run / "metadata.json").read_text()).get("train_finished")
    assert finished() is True
    with monkeypatch.context() as mp:
        mp.setattr(sine.OMLTraining, "step", _dying_step(2))
        with pytest.raises(SystemExit) as stopped:
            _resume(run, "--steps", "12")
    assert stopped.value.code == 130 and finished() is None
    _resume(run, "--steps", "12")
    assert finished() is True and torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 12


def test_concurrent_resume_is_refused_naming_the_holder(killed, capsys, monkeypatch):
    first = subprocess.Popen([sys.executable, "oml_regression.py", "--resume", str(killed), "--steps", "100000",
                              "--no-progress"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"},
                             preexec_fn=ctrl_c_restored)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and first.poll() is None:  # until it trains: its lock, a new checkpoint
            try:
                holder = json.loads((killed / LOCK_NAME).read_text())["pid"]
            except (OSError, ValueError):
                holder = None
            if holder == first.pid and torch.load(killed / "checkpoint.pt", weights_only=True)["step"] > 4:
                break
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()
        monkeypatch.setattr(sine.OMLTraining, "step", lambda self: pytest.fail("the second resume trained"))
        err = _refused(capsys, oml_regression.main, oml_regression.get_args_parser(), ["--resume", str(killed)])
        assert f"is in use by pid {first.pid}" in err
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130 and "interrupted: the checkpoint of step" in err, err
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), steps  # no record twice
    assert not (killed / LOCK_NAME).exists()


def test_a_fresh_run_holds_the_lock_while_training(tmp_path, monkeypatch):
    seen = []
    original = sine.OMLTraining.step

    def step(self):
        seen.extend(json.loads(p.read_text())["pid"] for p in tmp_path.rglob(LOCK_NAME))
        return original(self)

    monkeypatch.setattr(sine.OMLTraining, "step", step)
    run = _train(tmp_path)
    assert seen == [os.getpid()] * 8
    assert not (run / LOCK_NAME).exists()


# --- Ctrl-C says what is kept --------------------------------------------------------------------

@pytest.mark.parametrize("at, message", [
    (2, "interrupted: no checkpoint was written yet (the first comes at step 4)"),
    (7, "interrupted: the checkpoint of step 4 is kept; continue with --resume"),
])
def test_interrupt_says_whether_a_checkpoint_exists(tmp_path, capsys, monkeypatch, at, message):
    monkeypatch.setattr(sine.OMLTraining, "step", _dying_step(at))
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_main(oml_regression.main, oml_regression.get_args_parser(), TINY + ["--results-dir", str(tmp_path)])
    assert info.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err, err
    assert not list(tmp_path.rglob(LOCK_NAME))


def test_interrupt_outside_training_claims_nothing(capsys):
    def main(args):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit):
        run_main(main, oml_regression.get_args_parser(), [])
    assert capsys.readouterr().err.strip() == "interrupted"


# --- export --------------------------------------------------------------------------------------

def _export_refused(capsys, source, out) -> str:
    return _refused(capsys, export.main, export.get_args_parser(), [str(source), str(out)])


@pytest.mark.parametrize("target, message", [
    ("own checkpoint", "is the checkpoint being exported"),
    ("another run's checkpoint", "is a resumable run checkpoint"),
    ("a folder", "is a folder"),
])
def test_export_never_overwrites_a_run_checkpoint(runs, killed, capsys, target, message):
    out = {"own checkpoint": killed / "checkpoint.pt", "another run's checkpoint": runs["whole"] / "checkpoint.pt",
           "a folder": killed}[target]
    before, whole = _snapshot(killed), _snapshot(runs["whole"])
    assert message in _export_refused(capsys, killed, out)
    assert _snapshot(killed) == before and _snapshot(runs["whole"]) == whole


def test_export_writes_weights_only_and_may_replace_an_export(runs, tmp_path):
    out = tmp_path / "shipped.pt"
    for _ in range(2):  # the second time over the first export: allowed
        export.main(export.get_args_parser().parse_args([str(runs["whole"]), str(out)]))
    payload = torch.load(out, weights_only=True)
    full = torch.load(runs["whole"] / "checkpoint.pt", weights_only=True)
    assert "training" not in payload and payload["config"] == full["config"]
    assert all(torch.equal(payload["state_dict"][k], v) for k, v in full["state_dict"].items())


# --- divergence: training stops with one line, the last good checkpoint kept ----------------------

def test_a_huge_inner_rate_stops_at_its_first_step(tmp_path, capsys):
    """--update_lr 1e10 gave a finite loss of 5.8e25 and a saved model with exit 0."""
    err = _refused(capsys, oml_regression.main, oml_regression.get_args_parser(),
                   TINY + ["--update_lr", "1e10", "--results-dir", str(tmp_path)])
    assert "training diverged: the loss reached" in err and "at step 1 (no checkpoint was written yet" in err, err
    assert not list(tmp_path.rglob("checkpoint.pt"))


@pytest.mark.parametrize("loss", [float("nan"), 5.8e25])
def test_divergence_after_a_checkpoint_keeps_it(tmp_path, capsys, monkeypatch, loss):
    original, calls = sine.OMLTraining.step, {"n": 0}

    def step(self):
        calls["n"] += 1
        metrics = original(self)
        return {**metrics, "loss": loss} if calls["n"] == 6 else metrics
    monkeypatch.setattr(sine.OMLTraining, "step", step)
    err = _refused(capsys, oml_regression.main, oml_regression.get_args_parser(), TINY + ["--results-dir", str(tmp_path)])
    assert "at step 6 (the checkpoint of step 4 is kept;" in err, err
    run = next(tmp_path.glob("*/sine/*"))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4


def test_a_sane_run_is_not_called_diverged(runs):
    losses = [json.loads(line)["loss"] for line in (runs["whole"] / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < loss < 100 for loss in losses)  # far below 1e6 x the starting loss, and it finished


@pytest.mark.parametrize("flags, message", [
    (["--save-every", "5"], "--save-every 5 is not a multiple of --log-every 2"),
    (["--save-every", "5", "--log-every", "50"], "give --save-every 50 or a --log-every that divides 5"),
])
def test_save_every_is_honoured_or_refused(tmp_path, capsys, flags, message):
    """It used to be rounded down to a multiple of the log interval without a word."""
    err = _refused(capsys, oml_regression.main, oml_regression.get_args_parser(),
                   TINY + flags + ["--results-dir", str(tmp_path)])
    assert message in err, err
    assert not any(tmp_path.iterdir())


def test_save_every_a_multiple_is_kept_exactly(tmp_path):
    run = _train(tmp_path, "--save-every", "6", "--log-every", "2", "--steps", "12")
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    assert payload["training"]["intervals"] == {"log_every": 2, "save_every": 6} and payload["step"] == 12
    assert payload[DIGEST] == weights_digest(payload["state_dict"])


# --- byte-identical runs -------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_checkpoint_and_results(tmp_path):
    """Different Python `random` states (as two processes have) must not reach the files."""
    evaluation = ["--eval-runs", "2", "--eval-test-samples", "40", "--eval-steps", "2"]
    random.seed(1)
    first = _train(tmp_path / "a", *evaluation)
    random.seed(2)
    second = _train(tmp_path / "b", *evaluation)
    for name in ("checkpoint.pt", "results.json", "metrics.jsonl", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


# --- the Omniglot script ---------------------------------------------------------------------------

def test_omniglot_resume_checks_its_flags(tmp_path, capsys):
    data = write_fake_both(tmp_path / "data", n_alphabets=2, chars_per_alphabet=4, size=20)
    common = ["--path", str(data), "--cache-dir", str(tmp_path / "cache"), "--nonstandard-data", "--no-progress"]
    tiny = ["--preset", "cpu", "--image-size", "12", "--channels", "4", "--strides", "2", "2", "--n-classes", "8",
            "--class-split", "4", "--steps", "2", "--log-every", "1", "--save-every", "2"]
    run = oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(
        tiny + common + ["--results-dir", str(tmp_path / "results")]))
    before = _snapshot(run)
    err = _refused(capsys, oml_omniglot.main, oml_omniglot.get_args_parser(),
                   ["--resume", str(run), "--class-split", "none", "--image-size", "16", *common])
    assert "--class-split none (the run has 4); --image-size 16 (the run has 12)" in err
    assert _snapshot(run) == before
    # the run's own values, the data flags and an extension are accepted
    oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(
        ["--resume", str(run), "--class-split", "4", "--strides", "2", "2", "--steps", "3", *common]))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    assert not (run / LOCK_NAME).exists()
