"""`python -m experiment.sweep ... --models PATH ...`: an evaluation sweep of given run folders or
checkpoint files (a shipped trained_models/*.pt), and a sweep's role in the compute accounting
(experiment/sweep_compute.py).

The plans and refusals are checked without running a job; one real job (a two-run evaluation of the
shipped quick sine model, no training) goes through the launcher and the aggregate.
"""
import json
import os
import shlex
from pathlib import Path

import pytest
import torch

from experiment import aggregate, sweep, sweep_compute, sweep_plan, sweep_records
from tests.conftest import REPO
from tests.test_sweep_inputs import sweep_cli
from utils.errors import UserError

SINE_OML = REPO / "trained_models" / "sine_quick_oml.pt"
SINE_PRE = REPO / "trained_models" / "sine_quick_pretraining.pt"


def _planned(words: list) -> dict:
    args = sweep.SweepFlags().parse_args([str(w) for w in words])
    return sweep_plan.plan(args, args.script_argv)


def _run_folder(tmp_path: Path) -> Path:
    """A run folder holding a checkpoint (a copy of a shipped one: the plan only checks that it is there)."""
    run = tmp_path / "runs" / "trained_r0_1"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(SINE_PRE.read_bytes())
    return run


def test_one_job_per_model_and_grid_point_each_with_its_absolute_model(tmp_path, monkeypatch):
    run = _run_folder(tmp_path)
    monkeypatch.chdir(tmp_path)  # the paths given relative to where the launcher runs
    plan = _planned(["evaluate_regression.py", "--runs", "2", "--seed", "1", "2",
                     "--models", Path("runs") / "trained_r0_1", SINE_OML, "--results-dir", tmp_path / "results"])
    assert plan["models"] == [str(run), str(SINE_OML)] and plan["models_from"] is None and plan["training"] is False
    assert [(j["rank"], j["model"], j["combination"]) for j in plan["jobs"]] == [
        (0, str(run), {"seed": 1}), (1, str(run), {"seed": 2}), (2, str(SINE_OML), {"seed": 1}), (3, str(SINE_OML), {"seed": 2})]
    for job in plan["jobs"]:
        command = job["command"]
        assert command[command.index("--model") + 1] == job["model"] and Path(job["model"]).is_absolute()
        assert command[command.index("--rank") + 1] == str(job["rank"] % 2)
    # the default name digests the models: other models, another sweep; the same ones spelled otherwise, the same
    other = _planned(["evaluate_regression.py", "--runs", "2", "--seed", "1", "2", "--models", SINE_OML,
                      "--results-dir", tmp_path / "results"])
    again = _planned(["evaluate_regression.py", "--runs", "2", "--seed", "1", "2", "--models", f"./runs/../runs/{run.name}",
                      SINE_OML, "--results-dir", tmp_path / "results"])
    assert other["name"] != plan["name"] == again["name"]
    assert [j["command"] for j in again["jobs"]] == [j["command"] for j in plan["jobs"]]


MODEL_ERRORS = {
    "a path that does not exist": (["--models", "{tmp}/nothere.pt"], "--models {tmp}/nothere.pt: no such file or folder"),
    "a folder without a checkpoint": (["--models", "{tmp}"], "no checkpoint at"),
    "one model twice": (["--models", str(SINE_OML), str(SINE_OML)], "given twice"),
    "both sources": (["--models", str(SINE_OML), "--models-from", "{tmp}"], "not both"),
    "--models-where with --models": (["--models", str(SINE_OML), "--models-where", "method=oml"],
                                     "--models-where filters the runs of --models-from (not --models)"),
    "a script without --model": (["--models", str(SINE_OML)], "--models needs an evaluation script"),
    "--model in the script's command": (["--model", str(SINE_OML), "--models", str(SINE_OML)], "--model is set by the sweep"),
}


@pytest.mark.parametrize("case", MODEL_ERRORS)
def test_bad_models_are_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    flags, message = MODEL_ERRORS[case]
    script = "oml_regression.py" if case == "a script without --model" else "evaluate_regression.py"
    results = tmp_path / "results"
    code, out, err = sweep_cli([script, "--seed", "1", *[f.format(tmp=tmp_path) for f in flags], "--results-dir", results],
                               capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and out == "", err
    assert message.format(tmp=tmp_path) in err, err
    assert not results.exists()


def test_the_rerun_command_names_the_models_relative_to_where_the_sweep_ran(tmp_path, monkeypatch):
    _run_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    first = _planned(["evaluate_regression.py", "--runs", "2", "--models", "runs/trained_r0_1", SINE_OML, "--name", "ev",
                      "--results-dir", "results"])
    words = shlex.split(sweep_compute.rerun_command(first))
    assert words[words.index("--models") + 1:words.index("--name")] == ["runs/trained_r0_1", os.path.relpath(SINE_OML, tmp_path)]
    assert "--models-from" not in words and words[-2:] == ["--results-dir", "results"]
    assert [j["command"] for j in _planned(words[3:])["jobs"]] == [j["command"] for j in first["jobs"]]


@pytest.mark.parametrize("sweep_json, role", [
    ({"script": "oml_omniglot.py", "training": True}, "training"),
    # a frozen random RLN at several network seeds: no models, yet an evaluation
    ({"script": "evaluate_omniglot.py", "training": False, "models_from": None}, "evaluation"),
    ({"script": "evaluate_regression.py", "training": False, "models": ["/m/a.pt"]}, "evaluation"),
    # sweep.json written before it recorded `training`
    ({"script": "oml_regression.py"}, "training"),
    ({"script": "evaluate_omniglot.py", "argv": ["--network-seed", "1", "2"]}, "evaluation"),
    ({"script": "evaluate_regression.py", "models_from": "/r/sweeps/tr"}, "evaluation"),
])
def test_a_sweeps_role_is_what_its_script_does(tmp_path, sweep_json, role):
    assert sweep_compute.role_of(sweep_json) == role
    folder = tmp_path / "sweeps" / "s"
    folder.mkdir(parents=True)
    jobs = [{"rank": 0, "command": ["python", sweep_json["script"]], "run_name": "s_r0"}]
    (folder / "sweep.json").write_text(json.dumps({"name": "s", "cwd": str(tmp_path), "jobs": jobs, **sweep_json}))
    (tmp_path / "sweeps" / "tr").mkdir()  # models_from's sweep, read for its own role
    (tmp_path / "sweeps" / "tr" / "sweep.json").write_text(json.dumps({"name": "tr", "script": "oml_regression.py",
                                                                       "training": True, "jobs": jobs}))
    costs = sweep_compute.sweeps_cost([folder])
    assert costs[0]["role"] == role and all(c["role"] == "training" for c in costs[1:])


def test_an_evaluation_sweep_of_a_shipped_checkpoint_aggregates_by_its_config(tmp_path, capsys):
    """One real job: the shipped quick OML model, two evaluation runs at a fixed rate (no search)."""
    results = tmp_path / "results"
    code, out, err = sweep_cli(["evaluate_regression.py", "--runs", "2", "--lr", "0.003", "--tasks", "2",
                                "--update_step", "2", "--test-samples", "20", "--models", SINE_OML, "--name", "shipped",
                                "--results-dir", results], capsys)
    assert code == 0, err
    [folder] = results.glob("*/sweeps/shipped")
    recorded = json.loads((folder / "sweep.json").read_text())
    assert recorded["models"] == [str(SINE_OML)] and recorded["jobs"][0]["model"] == str(SINE_OML)
    out = aggregate.aggregate(folder, tmp_path / "agg", summary=tmp_path / "kept.json")
    capsys.readouterr()
    [group] = json.loads((out / "summary.json").read_text())["groups"]
    [sweep] = json.loads((tmp_path / "kept.json").read_text())["sweeps"]  # the summary the repository keeps
    assert sweep["models"] == [SINE_OML.name] and sweep["models_from"] == []
    config = torch.load(SINE_OML, map_location="cpu", weights_only=True)["config"]
    assert group["label"].startswith("OML") and group["seeds"] == [config["seed"]] and group["jobs"] == ["shipped/r0"]
    # relaunched with the same models, nothing runs again; other models under the same name are refused
    code, out, _ = sweep_cli(["evaluate_regression.py", "--runs", "2", "--lr", "0.003", "--tasks", "2", "--update_step", "2",
                              "--test-samples", "20", "--models", SINE_OML, "--name", "shipped", "--results-dir", results],
                             capsys)
    assert code == 0 and "every job of" in out
    other = _planned(["evaluate_regression.py", "--runs", "2", "--lr", "0.003", "--tasks", "2", "--update_step", "2",
                      "--test-samples", "20", "--models", SINE_PRE, "--name", "shipped", "--results-dir", results])
    with pytest.raises(UserError, match="a different sweep named 'shipped'"):
        sweep_records.sweep_folder(other)
