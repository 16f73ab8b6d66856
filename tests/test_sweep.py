"""Sweeps (experiment/sweep.py) and their aggregation over seeds (experiment/aggregate.py).

A real 2 seeds x 2 methods sweep of tiny sine runs goes through submitit's local executor, is
aggregated and plotted; a relaunch submits nothing. A job preempted half-way (SLURM's warning
signal, sent to the job as SLURM would) is requeued by submitit and ends with the checkpoint of
an uninterrupted run. The SLURM path runs against a fake `sbatch` on PATH. No cluster needed.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
import torch

import oml_regression
import plot_results
from experiment import aggregate, sweep, sweep_executor, sweep_job, sweep_plan, sweep_records
from tests.conftest import REPO
from tests.polling import wait_until
from utils.errors import UserError

TINY = ["--preset", "oml2020", "--width", "16", "--steps", "10", "--log-every", "5", "--save-every", "5",
        "--eval-runs", "2", "--eval-test-samples", "20", "--eval-steps", "2", "--eval-lr", "0.01", "--no-progress"]
GRID = ["--seed", "1", "2", "--method", "oml", "pretraining"]


def launch(tmp_path, script_argv, *sweep_flags, script="oml_regression.py"):
    argv = [script, *script_argv, "--results-dir", str(tmp_path / "results"), *sweep_flags]
    args, rest = sweep.get_args_parser().parse_known_args(argv)
    return sweep.main(args, rest)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    folder = launch(root, TINY + GRID, "--executor", "local", "--max-parallel", "2")
    return root, folder


def test_dry_run_prints_one_line_per_job_and_writes_nothing(tmp_path, capsys):
    assert launch(tmp_path, TINY + GRID, "--dry-run", "--name", "dry") is None
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep dry: 4 jobs")
    jobs = [line.split("\t") for line in lines[1:]]
    assert [j[0] for j in jobs] == ["0", "1", "2", "3"]
    # --seed varies fastest (experiment/grid.py), as the scripts' --rank numbers them
    assert [j[1] for j in jobs] == ["seed=1 method=oml", "seed=2 method=oml", "seed=1 method=pretraining",
                                    "seed=2 method=pretraining"]
    assert all(j[2].endswith(f"--rank {i} --name dry_r{i} --results-dir {tmp_path / 'results'}") for i, j in enumerate(jobs))
    assert not (tmp_path / "results").exists()


def test_a_local_sweep_runs_every_job_and_aggregates_over_seeds(local_sweep, capsys):
    root, folder = local_sweep
    record = json.loads((folder / "sweep.json").read_text())
    assert record["grid"] == {"seed": [1, 2], "method": ["oml", "pretraining"]}
    assert all(job["job_ids"] for job in record["jobs"])
    states = sweep_records.job_states(folder)
    assert [s["state"] for s in states] == ["finished"] * 4
    for s in states:
        run = Path(s["run_dir"])
        assert run.name == f"{record['name']}_r{s['rank']}_1" and (run / "results.json").is_file()
        config = json.loads((run / "config.json").read_text())
        assert (config["seed"], config["method"]) == (s["combination"]["seed"], s["combination"]["method"])
    out = aggregate.aggregate(folder)
    tables = (out / "tables.md").read_text()
    assert "| network | OML | Pretraining | seeds |" in tables and "Every job finished" in tables
    summary = json.loads((out / "summary.json").read_text())
    assert [g["seeds"] for g in summary["groups"]] == [[1, 2], [1, 2]]
    oml = json.loads((out / summary["groups"][0]["file"]).read_text())
    assert oml["label"].startswith("OML")
    # across seeds: the mean of the two seeds' means over their runs, each seed's spread kept apart
    seed_means = []
    for s in states[:2]:
        runs = json.loads((Path(s["run_dir"]) / "results.json").read_text())["runs"]["curve"]
        seed_means.append(torch.tensor(runs, dtype=torch.float64).mean(0))
        assert oml["by_seed"][str(s["combination"]["seed"])]["runs"] == len(runs)
    expected = torch.stack(seed_means).mean(0)
    torch.testing.assert_close(torch.tensor(oml["curve"]["mean"], dtype=torch.float64), expected, rtol=0, atol=1e-7)
    assert all(lo <= m <= hi for lo, m, hi in zip(oml["curve"]["ci_low"], oml["curve"]["mean"], oml["curve"]["ci_high"]))
    # the sweep folder plots as Fig. 3 with bands across seeds
    figure = plot_results.main(plot_results.get_args_parser().parse_args([str(folder), "--out", str(root / "fig.png")]))
    assert figure.is_file()
    # relaunched, the same command finds the sweep and submits nothing
    capsys.readouterr()
    assert launch(root, TINY + GRID, "--executor", "local") == folder
    assert "every job of" in capsys.readouterr().out
    assert [len(j["job_ids"]) for j in json.loads((folder / "sweep.json").read_text())["jobs"]] == [1] * 4


def test_a_failed_job_is_reported_with_its_error_never_averaged(local_sweep, tmp_path):
    _, folder = local_sweep
    copy = tmp_path / "sweep"
    (copy / "jobs").mkdir(parents=True)
    record = json.loads((folder / "sweep.json").read_text())
    for name in ("r0.json", "r1.json", "r2.json"):
        (copy / "jobs" / name).write_text((folder / "jobs" / name).read_text())
    # job r3 fails for real: the script refuses its command with a one-line error
    bad = {**record["jobs"][3], "command": [sys.executable, str(REPO / "oml_regression.py"), *TINY, "--width", "0",
                                            "--name", "bad", "--results-dir", str(tmp_path / "results")]}
    record["jobs"][3] = bad
    (copy / "sweep.json").write_text(json.dumps(record))
    with pytest.raises(RuntimeError, match="--width"):
        sweep_job.SweepJob(copy, bad, tmp_path / "results", REPO)()
    state = json.loads((copy / "jobs" / "r3.json").read_text())
    assert state["state"] == "failed" and state["error"].startswith("error: --width")
    out = aggregate.aggregate(copy, tmp_path / "agg")
    summary = json.loads((out / "summary.json").read_text())
    assert [(p["rank"], p["state"]) for p in summary["not_counted"]] == [(3, "failed")]
    assert summary["not_counted"][0]["error"] == state["error"]
    pretraining = [g for g in summary["groups"] if g["label"].startswith("Pretraining")]
    assert pretraining[0]["ranks"] == [2] and pretraining[0]["seeds"] == [1]
    tables = (out / "tables.md").read_text()
    assert "(one seed)" in tables and "| sweep/r3 | failed |" in tables and "error: --width" in tables


def test_a_candidate_that_failed_for_good_is_left_out_by_models_where_and_blocks_otherwise(local_sweep, tmp_path,
                                                                                             capsys):
    """A grid value at which training dies (a rate too large) fails on every relaunch; naming the values
    to evaluate with --models-where leaves that job out instead of refusing the whole sweep."""
    _, folder = local_sweep
    copy = tmp_path / "sweep"
    (copy / "jobs").mkdir(parents=True)
    (copy / "sweep.json").write_text((folder / "sweep.json").read_text())
    for rank in range(4):
        record = json.loads((folder / "jobs" / f"r{rank}.json").read_text())
        if rank == 3:  # pretraining, seed 2
            record = {**record, "state": "failed", "error": "error: training cannot recover"}
        (copy / "jobs" / f"r{rank}.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"jobs not finished: r3 \(failed\)"):
        launch(tmp_path, ["--runs", "2"], "--models-from", str(copy), "--dry-run", script="evaluate_regression.py")
    with pytest.raises(UserError, match=r"jobs not finished: r3 \(failed\)"):  # the filter keeps r3: still refused
        launch(tmp_path, ["--runs", "2"], "--models-from", str(copy), "--models-where", "method=pretraining",
               "--dry-run", script="evaluate_regression.py")
    capsys.readouterr()
    launch(tmp_path, ["--runs", "2"], "--models-from", str(copy), "--models-where", "seed=1", "--dry-run",
           script="evaluate_regression.py")
    jobs = capsys.readouterr().out.splitlines()[1:]
    trained = [Path(s["run_dir"]) for s in sweep_records.job_states(folder)]
    assert len(jobs) == 2 and all(f"--model {run}" in line for run, line in zip(trained[0::2], jobs))
    # evaluated and aggregated, the summary still names the candidate that died in training
    evaluated = launch(tmp_path, ["--runs", "2", "--test-samples", "20"], "--models-from", str(copy),
                       "--models-where", "seed=1", "--executor", "local", "--name", "ev_left_out",
                       script="evaluate_regression.py")
    out = aggregate.aggregate(evaluated, tmp_path / "agg_left_out", summary=tmp_path / "left_out.json")
    left_out = json.loads((tmp_path / "left_out.json").read_text())["not_counted"]
    assert left_out == [{"job": "sweep/r3", "state": "failed in training", "error": "error: training cannot recover"}]
    assert "| sweep/r3 | failed in training |" in (out / "tables.md").read_text()


def test_models_where_picks_one_method_and_several_sweeps_aggregate_as_one(local_sweep, tmp_path, capsys):
    _, folder = local_sweep
    capsys.readouterr()
    launch(tmp_path, ["--runs", "2"], "--models-from", str(folder), "--models-where", "method=pretraining", "--dry-run",
           script="evaluate_regression.py")
    jobs = capsys.readouterr().out.splitlines()[1:]
    trained = [Path(s["run_dir"]) for s in sweep_records.job_states(folder)]
    assert len(jobs) == 2 and all(f"--model {run}" in line for run, line in zip(trained[2:], jobs))
    capsys.readouterr()
    launch(tmp_path, ["--runs", "2"], "--models-from", str(folder), "--models-where", "method=oml", "seed=[2,3]",
           "--dry-run", script="evaluate_regression.py")
    jobs = capsys.readouterr().out.splitlines()[1:]
    assert len(jobs) == 1 and f"--model {trained[1]}" in jobs[0]  # oml, seed 2
    with pytest.raises(UserError, match="no finished run"):
        launch(tmp_path, [], "--models-from", str(folder), "--models-where", "method=srnn", "--dry-run",
               script="evaluate_regression.py")
    with pytest.raises(UserError, match="not a setting"):
        launch(tmp_path, [], "--models-from", str(folder), "--models-where", "colour=red", "--dry-run",
               script="evaluate_regression.py")
    # the same jobs split into two sweeps (one per method) aggregate to the same groups as the whole
    record = json.loads((folder / "sweep.json").read_text())
    halves = []
    for name, ranks in (("oml_half", (0, 1)), ("pretraining_half", (2, 3))):
        half = tmp_path / name
        (half / "jobs").mkdir(parents=True)
        (half / "sweep.json").write_text(json.dumps({**record, "jobs": [record["jobs"][r] for r in ranks]}))
        for r in ranks:
            (half / "jobs" / f"r{r}.json").write_text((folder / "jobs" / f"r{r}.json").read_text())
        halves.append(half)
    with pytest.raises(UserError, match="--out"):
        aggregate.aggregate(halves)
    whole = json.loads((aggregate.aggregate(folder, tmp_path / "whole") / "summary.json").read_text())
    split = json.loads((aggregate.aggregate(halves, tmp_path / "split", tmp_path / "kept.json") / "summary.json").read_text())
    assert [g["label"] for g in split["groups"]] == [g["label"] for g in whole["groups"]]
    assert split["groups"][1]["jobs"] == ["pretraining_half/r2", "pretraining_half/r3"]
    for a, b in zip(whole["groups"], split["groups"]):
        assert json.loads((tmp_path / "whole" / a["file"]).read_text())["curve"] == \
            json.loads((tmp_path / "split" / b["file"]).read_text())["curve"]
    # plotted, the aggregate folder is those groups (each half given alone would be its own line)
    assert plot_results._expand_sweeps([tmp_path / "split"]) == [tmp_path / "split" / g["file"] for g in split["groups"]]
    figure = plot_results.main(plot_results.get_args_parser().parse_args([str(tmp_path / "split"), "--out",
                                                                         str(tmp_path / "split.png")]))
    assert figure.is_file()
    # the small summary the repository keeps: each row's numbers, per seed its runs and its online rate
    kept = json.loads((tmp_path / "kept.json").read_text())
    assert kept["split"] == "test" and [s["name"] for s in kept["sweeps"]] == [record["name"]] * 2
    for row, group in zip(kept["rows"], split["groups"]):
        result = json.loads((tmp_path / "split" / group["file"]).read_text())
        assert row["metrics"]["final_mse"]["mean"] == pytest.approx(result["final_mse"]["mean"], abs=1e-6)
        assert row["seeds"] == [1, 2] and all(entry["lr"] == [0.01] and entry["runs"] == 2 for entry in row["by_seed"].values())


def test_the_job_process_imports_no_torch():
    """Each job process (and each requeued attempt) imports experiment.sweep_job to unpickle its
    job; torch's import would cost it seconds, so the checkpoint's file name is copied, not imported."""
    from experiment import checkpoint

    assert sweep_job.CHECKPOINT_NAME == checkpoint.CHECKPOINT_NAME
    probe = subprocess.run([sys.executable, "-c", "import sys, experiment.sweep_job; print(sorted({'torch', 'numpy'} & set(sys.modules)))"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and probe.stdout == "[]\n", probe.stdout + probe.stderr


def test_a_preempted_job_is_requeued_and_resumes_to_the_uninterrupted_checkpoint(tmp_path):
    argv = ["--preset", "oml2020", "--width", "16", "--steps", "150", "--log-every", "10", "--save-every", "10",
            "--eval-runs", "0", "--no-progress", "--seed", "3"]
    results = tmp_path / "results"
    args, rest = sweep.get_args_parser().parse_known_args(["oml_regression.py", *argv, "--results-dir", str(results),
                                                          "--name", "pre"])
    plan = sweep_plan.plan(args, rest)
    folder = tmp_path / "sweep"
    executor = sweep_executor.make_executor(args, folder / "submitit")
    job = executor.submit(sweep_job.SweepJob(folder, plan["jobs"][0], plan["results_dir"], plan["cwd"]))
    state_path = folder / "jobs" / "r0.json"

    def checkpointed():
        runs = list(results.glob("*/sine/pre_r0_1"))
        return runs if runs and (runs[0] / "checkpoint.pt").is_file() and state_path.is_file() else None
    runs = wait_until(checkpointed, what="the first periodic checkpoint")  # then preempt the job, as SLURM would
    os.kill(json.loads(state_path.read_text())["job_pid"], signal.SIGUSR2)
    wait_until(job.done, what="the requeued job's end")  # polled here; submitit's own wait polls once a second
    assert job.result()["state"] == "finished"
    state = json.loads(state_path.read_text())
    assert len(state["attempts"]) == 2 and state["attempts"][1]["resumed"] == str(runs[0])
    assert state["attempts"][1]["command"][-2:] == ["--resume", str(runs[0])]
    assert "Caught signal SIGUSR2" in job.stderr() + job.stdout()
    whole = oml_regression.main(oml_regression.get_args_parser().parse_args([*argv, "--results-dir", str(tmp_path / "whole")]))
    a, b = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (whole, runs[0]))
    assert a["step"] == b["step"] == 150
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert (whole / "metrics.jsonl").read_bytes() == (runs[0] / "metrics.jsonl").read_bytes()
    assert json.loads((runs[0] / "metadata.json").read_text())["resumed"]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`sbatch` that records the script it is given and answers as SLURM does; `srun` to be found."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch_scripts"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {record}/\necho 'Submitted batch job 1234'\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_slurm_submits_one_array_whose_requeued_jobs_resume(tmp_path, fake_slurm):
    folder = launch(tmp_path, TINY + GRID, "--executor", "slurm", "--max-parallel", "3", "--partition", "gpu",
                    "--gpus-per-job", "1", "--cpus-per-job", "4", "--timeout", "30", "--name", "cluster")
    scripts = list(fake_slurm.iterdir())
    assert len(scripts) == 1  # one array job
    text = scripts[0].read_text()
    for line in ("#SBATCH --array=0-3%3", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --time=30", f"export PYTHONPATH={REPO}"):
        assert line in text, line
    assert "-m submitit.core._submit" in text
    record = json.loads((folder / "sweep.json").read_text())
    assert [j["job_ids"] for j in record["jobs"]] == [[f"1234_{i}"] for i in range(4)]
    # each array task's pickled job runs the user's command with its own rank and run name
    delayed = {}
    for rank in range(4):
        job = submitit.SlurmJob(folder / "submitit", f"1234_{rank}")
        delayed[rank] = submitit.helpers.DelayedSubmission.load(job.paths.submitted_pickle)
        command = delayed[rank].function.command
        assert command[-6:] == ["--rank", str(rank), "--name", f"cluster_r{rank}", "--results-dir",
                                str(tmp_path / "results")]
    # preempted, the job checkpoints itself (submitit requeues it) and on restart resumes its run folder
    requeued = delayed[2].function.checkpoint()
    assert isinstance(requeued, submitit.helpers.DelayedSubmission) and requeued.function.rank == 2
    assert json.loads((folder / "jobs" / "r2.json").read_text())["state"] == "preempted"
    run = tmp_path / "results" / "26May2026" / "sine" / "cluster_r2_1"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    command, resumed = requeued.function.command_now({"attempts": []})
    assert resumed == str(run) and command[-2:] == ["--resume", str(run)]
    # only the flags a resumed run takes again: the run's config comes from its checkpoint
    assert command[2:-2] == ["--log-every", "5", "--save-every", "5", "--eval-steps", "2", "--eval-lr", "0.01",
                             "--no-progress"]


def test_a_setting_that_follows_the_method_does_not_split_the_table_rows():
    """The i.i.d. baselines' steps come from their own recipe: one row per network, methods as
    columns. A setting swept within a method still makes rows."""
    from experiment.aggregate import groups_of

    def entry(method, seed, **settings):
        return {"seed": seed, "rank": seed, "run_dir": "x", "result": {},
                "settings": {"preset": "cpu", "method": method, **settings}}
    recipe = [entry("oml", s, steps=10000) for s in (1, 2)] + [entry("srnn", s, steps=1900) for s in (1, 2)]
    assert {(g["method"], g["row"]) for g in groups_of(recipe)} == {("OML", "cpu"), ("SR-NN", "cpu")}
    swept = recipe + [entry("oml", s, steps=5000) for s in (1, 2)]
    assert {(g["method"], g["row"]) for g in groups_of(swept)} == {
        ("OML", "steps=10000"), ("OML", "steps=5000"), ("SR-NN", "steps=1900")}
