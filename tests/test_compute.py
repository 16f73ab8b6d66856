"""The compute of the evidence: each sweep job records its script's CPU time (experiment/sweep_job.py),
the summaries count every sweep's jobs and hours with the command that reruns it
(experiment/sweep_compute.py), and docs/compute.md's table shows them (analysis/compute_table.py).

Sweep folders are made by hand (sweep.json and jobs/r<i>.json as the launcher and the jobs write
them), so no sweep runs here; the one child process is a short busy loop.
"""
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from analysis import compute_table, tables
from experiment import aggregate, summaries, sweep, sweep_compute, sweep_job, sweep_plan
from tests.conftest import ctrl_c_restored
from tests.test_aggregate_damaged import make_sweep


def _busy_child(seconds: float) -> subprocess.Popen:
    code = f"import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass"
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL, preexec_fn=ctrl_c_restored)


def test_an_ended_attempt_records_its_childs_cpu_seconds():
    child = _busy_child(0.3)
    start = time.time()
    code, usage = sweep_job._reap(child.pid)
    wall = time.time() - start
    attempt = sweep_job.attempt_ended({"started": "2026-12-03T10:00:00"}, code, usage)
    assert attempt["returncode"] == 0 and attempt["started"] == "2026-12-03T10:00:00" and "ended" in attempt
    # the child's own CPU time: at least the 0.3 s it spun, at most its wall time (one thread)
    assert 0.3 <= attempt["cpu_s"] <= wall + 0.05
    assert json.loads(json.dumps(attempt)) == attempt


def test_unknown_usage_is_recorded_as_none_never_zero():
    assert sweep_job.attempt_ended({}, 1, None)["cpu_s"] is None


def test_a_child_the_kernel_reaped_itself_has_no_cpu_time_rather_than_a_made_up_one():
    child = _busy_child(0)
    os.waitpid(child.pid, 0)  # as where SIGCHLD is inherited ignored: no status is left for the job
    assert sweep_job._wait_for(child) == (0, None) and child.returncode == 0


def test_a_stopped_childs_cpu_time_is_returned_by_stop_child():
    job = sweep_job.SweepJob.__new__(sweep_job.SweepJob)
    job._child = _busy_child(60)
    time.sleep(0.5)
    code, usage = job._stop_child()  # Ctrl-C: the busy loop ends with KeyboardInterrupt
    assert code != 0 and usage.ru_utime + usage.ru_stime > 0.05 and job._child is None
    assert job._stop_child() is None  # nothing left to stop


def test_a_job_records_cpu_seconds_next_to_each_attempts_times(tmp_path):
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"
    job = {"rank": 0, "run_name": "busy_r0", "command": [sys.executable, "-c", code], "resume_command": None}
    result = sweep_job.SweepJob(tmp_path / "sweep", job, tmp_path / "results", tmp_path)()
    assert result["state"] == "finished"
    [attempt] = json.loads((tmp_path / "sweep" / "jobs" / "r0.json").read_text())["attempts"]
    assert {"started", "ended", "returncode", "cpu_s"} <= set(attempt) and attempt["cpu_s"] >= 0.2


# --- the summaries' compute entry and docs/compute.md's table ---------------------------------------

def _attempt(start: str, hours: float, cpu_s=None) -> dict:
    began = dt.datetime.fromisoformat(f"2026-12-03T{start}")
    attempt = {"started": began.isoformat(), "ended": (began + dt.timedelta(hours=hours)).isoformat()}
    return attempt if cpu_s is None else {**attempt, "cpu_s": cpu_s}


def _record(folder: Path, rank: int, *attempts: dict) -> None:
    path = folder / "jobs" / f"r{rank}.json"
    record = json.loads(path.read_text()) if path.is_file() else {"state": "finished", "rank": rank}
    path.write_text(json.dumps({**record, "attempts": list(attempts)}))


def _sweeps(tmp_path: Path) -> Path:
    """An evaluation sweep `syn` (4 finished sine jobs, CPU time recorded) of a training sweep `tr`
    (2 jobs, records from before CPU time was: none), both in tmp_path/sweeps."""
    evaluation = make_sweep(tmp_path)
    for results in (tmp_path / "runs").glob("*/results.json"):  # the online rate, as evaluate_regression.py writes it
        results.write_text(json.dumps({**json.loads(results.read_text()), "protocol": {"lr": 0.003}}))
    sweep = json.loads((evaluation / "sweep.json").read_text())
    sweep.update(script="evaluate_regression.py", argv=["--runs", "2"], models_from=[str(tmp_path / "sweeps" / "tr")],
                 models_where={"method": "oml", "seed": [1, 2]}, cwd=str(tmp_path), executor="local",
                 executor_options={"max_parallel": 2}, results_dir=str(tmp_path.parent / "results"))
    (evaluation / "sweep.json").write_text(json.dumps(sweep))
    _record(evaluation, 0, _attempt("10:00:00", 0.5, 1700))
    _record(evaluation, 1, _attempt("10:00:00", 0.5, 1000), _attempt("11:00:00", 0.25, 800))  # requeued once
    _record(evaluation, 2, _attempt("10:30:00", 1.0, 3600))
    _record(evaluation, 3, _attempt("10:30:00", 0.75, 2000))
    training = tmp_path / "sweeps" / "tr"
    (training / "jobs").mkdir(parents=True)
    (training / "sweep.json").write_text(json.dumps({
        "name": "tr", "script": "oml_regression.py", "argv": ["--seed", "1", "2", "--eval-runs", "0"], "cwd": str(tmp_path),
        "results_dir": str(tmp_path / "elsewhere"), "executor": "local", "executor_options": {"max_parallel": None},
        "jobs": [{"rank": r, "command": ["python", "oml_regression.py"], "run_name": f"tr_r{r}"} for r in (0, 1)]}))
    _record(training, 0, _attempt("08:00:00", 2.0))
    _record(training, 1, {"started": "2026-12-03T08:00:00"})  # still running, or killed with its job
    return evaluation


def _summary(tmp_path: Path, capsys) -> dict:
    summary = tmp_path / "repo" / "summaries" / "syn_table.json"
    aggregate.aggregate([_sweeps(tmp_path)], out=tmp_path / "agg", summary=summary)
    capsys.readouterr()
    return json.loads(summary.read_text())


def test_a_summary_counts_its_sweeps_and_their_training_sweeps_exactly(tmp_path, capsys):
    compute = _summary(tmp_path, capsys)["compute"]
    syn, tr = compute["sweeps"]
    assert (syn["name"], syn["role"], syn["jobs"], syn["attempts"], syn["attempts_without_end"]) == ("syn", "evaluation", 4, 5, 0)
    assert syn["wall_hours"] == 3.0 and syn["cpu_hours"] == round(9100 / 3600, 4)
    assert syn["models_from"] == ["tr"] and syn["max_parallel"] == 2 and syn["folder"] == "sweeps/syn"
    assert syn["rerun"] == ("python -m experiment.sweep evaluate_regression.py --runs 2 --models-from sweeps/tr "
                            "--models-where method=oml 'seed=[1,2]' --name syn")
    # the training sweep's records predate CPU time: null, never 0; the unended attempt is not counted
    assert (tr["name"], tr["role"], tr["jobs"], tr["attempts"], tr["attempts_without_end"]) == ("tr", "training", 2, 1, 1)
    assert tr["wall_hours"] == 2.0 and tr["cpu_hours"] is None and tr["max_parallel"] == 1
    assert tr["rerun"] == ("python -m experiment.sweep oml_regression.py --seed 1 2 --eval-runs 0 --name tr "
                           "--results-dir elsewhere")
    assert compute["total"] == {"sweeps": 2, "jobs": 6, "wall_hours": 5.0, "cpu_hours": None}
    assert compute["aggregate"].startswith("python -m experiment.aggregate sweeps/syn --summary ")
    assert "upper bound of its CPU hours" in compute["counts"]


def test_a_training_sweep_not_found_is_named_and_left_out_of_the_totals(tmp_path, capsys):
    evaluation = _sweeps(tmp_path)
    shutil.rmtree(tmp_path / "sweeps" / "tr")
    compute = summaries.compute_of([evaluation], "python -m experiment.aggregate syn --summary s.json")
    assert compute["sweeps"][1]["name"] == "tr" and "missing" in compute["sweeps"][1]
    assert compute["total"] == {"sweeps": 2, "jobs": 4, "wall_hours": 3.0, "cpu_hours": None}


def test_a_training_sweep_of_another_days_folder_is_found_where_it_was_recorded(tmp_path, capsys):
    evaluation = _sweeps(tmp_path)
    earlier = tmp_path / "03December2026" / "sweeps" / "tr"
    earlier.parent.mkdir(parents=True)
    shutil.move(tmp_path / "sweeps" / "tr", earlier)
    sweep = json.loads((evaluation / "sweep.json").read_text())
    (evaluation / "sweep.json").write_text(json.dumps({**sweep, "models_from": [str(earlier)]}))
    compute = summaries.compute_of([evaluation], "python -m experiment.aggregate syn --summary s.json")
    tr = compute["sweeps"][1]
    assert tr["name"] == "tr" and "missing" not in tr and tr["folder"] == "03December2026/sweeps/tr"
    assert compute["total"] == {"sweeps": 2, "jobs": 6, "wall_hours": 5.0, "cpu_hours": None}


def test_an_aggregate_of_several_sweeps_reruns_with_their_folders_and_an_out(tmp_path):
    costs = [{"name": "a", "folder": "../results/d/sweeps/a"}, {"name": "b", "folder": "../results/d/sweeps/b"}]
    assert sweep_compute.rerun_aggregate("python -m experiment.aggregate a b --summary summaries/t.json", costs) == \
        "python -m experiment.aggregate ../results/d/sweeps/a ../results/d/sweeps/b --out /tmp/agg_t --summary summaries/t.json"


def test_the_compute_table_shows_each_summary_and_counts_a_shared_sweep_once(tmp_path, capsys):
    first = _summary(tmp_path, capsys)
    repo = tmp_path / "repo"
    second = json.loads(json.dumps(first))  # another table from the same training sweep
    second["compute"]["sweeps"] = [{**second["compute"]["sweeps"][0], "name": "syn2", "rerun": "python -m experiment.sweep x --name syn2"},
                                   {**second["compute"]["sweeps"][1]}]
    second["compute"]["total"] = {"sweeps": 2, "jobs": 6, "wall_hours": 5.0, "cpu_hours": None}
    (repo / "summaries" / "syn_other.json").write_text(json.dumps(second))
    (repo / "summaries" / "older.json").write_text(json.dumps({k: v for k, v in first.items() if k != "compute"}))
    text = compute_table.render(repo)
    assert "| syn_table | tr | training | 2 | 2.00 | not recorded |\n|  | syn | evaluation | 4 | 3.00 | 2.53 |\n" in text
    assert "|  | **total** (2 sweeps) |  | **6** | **5.00** | **not recorded** |" in text
    assert "| **all tables** | 3 sweeps, each once |  | **10** | **8.00** | **not recorded** |" in text
    assert "No compute recorded (summaries written before it was; regenerate them with their aggregate): older." in text
    block = text[text.index("# syn_table"):]
    tr, syn, agg = block.splitlines()[1:4]
    assert tr.endswith("--name tr --results-dir elsewhere") and syn.endswith("--name syn")
    assert agg.startswith("python -m experiment.aggregate sweeps/syn --summary")
    (repo / "docs").mkdir()
    (repo / "README.md").write_text("# r\n")
    (repo / "docs" / "compute.md").write_text("intro\n<!-- table: compute -->\nold\n<!-- /table -->\n")
    assert tables.stale_files(repo) == {repo / "docs" / "compute.md": f"intro\n<!-- table: compute -->\n{text}\n<!-- /table -->\n"}


def test_an_attempt_stopped_for_a_requeue_records_its_end_and_cpu_time(tmp_path):
    job = sweep_job.SweepJob(tmp_path / "sweep", {"rank": 0, "run_name": "busy_r0", "command": ["python"],
                                                  "resume_command": None}, tmp_path / "results", tmp_path)
    job.write_state({"rank": 0, "attempts": [{"started": "2026-12-03T10:00:00"}]}, state="running")
    job._child = _busy_child(60)
    time.sleep(0.5)
    job.checkpoint()  # what SLURM's USR2 or SIGTERM leads to: Ctrl-C to the script, then a requeue
    state = job.read_state()
    assert state["state"] == "preempted"
    [attempt] = state["attempts"]
    assert attempt["returncode"] != 0 and attempt["cpu_s"] > 0.05 and "ended" in attempt


def _planned(words: list[str]) -> dict:
    args = sweep.SweepFlags().parse_args(words)
    return sweep_plan.plan(args, args.script_argv)


def test_a_sweeps_rerun_command_plans_the_same_jobs(tmp_path):
    results = str(tmp_path / "results")
    training = _planned(["oml_regression.py", "--preset", "quick", "--seed", "1", "2", "--method", "oml", "srnn",
                         "--eval-runs", "0", "--name", "tr", "--results-dir", results])
    models = make_sweep(tmp_path)  # finished runs, their configs' method and seed (oml and srnn, seeds 1 and 2)
    evaluation = _planned(["evaluate_regression.py", "--rln", "3", "--models-from", str(models),
                           "--models-where", "method=oml", "seed=[1,2]", "--name", "ev", "--results-dir", results])
    assert len(evaluation["jobs"]) == 2
    for first in (training, evaluation):
        rerun = shlex.split(sweep_compute.rerun_command(first))
        assert rerun[:3] == ["python", "-m", "experiment.sweep"]
        assert [j["command"] for j in _planned(rerun[3:])["jobs"]] == [j["command"] for j in first["jobs"]]


# --- sweeps whose runs chose another sweep's hyperparameters (--hyperparameters-from) ---------------

def _hand_sweep(results: Path, name: str, script: str, attempt_hours: float, cpu_s: float, **recorded) -> Path:
    """A finished one-job sweep in results/06December2026/sweeps/<name>, its run made where a job makes it."""
    folder = results / "06December2026" / "sweeps" / name
    run = results / "06December2026" / "omniglot_table2" / f"{name}_r0_1"
    (folder / "jobs").mkdir(parents=True)
    run.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({
        "name": name, "script": script, "argv": [], "cwd": str(results.parent), "results_dir": str(results),
        "executor": "local", "executor_options": {"max_parallel": 1}, **recorded,
        "jobs": [{"rank": 0, "run_name": f"{name}_r0", "command": ["python", script]}]}))
    (folder / "jobs" / "r0.json").write_text(json.dumps({"state": "finished", "run_dir": str(run)}))
    _record(folder, 0, _attempt("01:00:00", attempt_hours, cpu_s))
    return folder


def test_a_sweep_records_the_sweeps_whose_runs_its_hyperparameters_come_from(tmp_path):
    results = tmp_path / "results"
    search = _hand_sweep(results, "srch", "evaluate_omniglot.py", 0.5, 1800)
    by_hand = results / "06December2026" / "omniglot_table2" / "mine_1"  # a run no sweep made: no sweep to count
    by_hand.mkdir()
    run = search.parents[1] / "omniglot_table2" / "srch_r0_1"
    assert sweep_plan.sweep_of_run(run) == search and sweep_plan.sweep_of_run(by_hand) is None
    planned = _planned(["evaluate_omniglot.py", "--learner", "online", "--hyperparameters-from", str(run), str(run),
                        str(by_hand), "--name", "hp", "--results-dir", str(results)])
    assert planned["hyperparameters_from"] == [str(search)]
    assert _planned(["evaluate_omniglot.py", "--learner", "online", "--name", "own",
                     "--results-dir", str(results)])["hyperparameters_from"] is None


def test_a_summarys_compute_counts_the_sweeps_that_chose_its_hyperparameters_and_their_training(tmp_path):
    results = tmp_path / "results"
    twins = _hand_sweep(results, "twins", "oml_omniglot.py", 1.0, 3600, training=True)
    search = _hand_sweep(results, "srch", "evaluate_omniglot.py", 0.5, 1800, models_from=[str(twins)])
    seeds = _hand_sweep(results, "seeds", "oml_omniglot.py", 1.0, 3600, training=True)
    chosen = _hand_sweep(results, "hp", "evaluate_omniglot.py", 0.25, 900, models_from=[str(seeds)],
                         hyperparameters_from=[str(search)])
    own = _hand_sweep(results, "own", "evaluate_omniglot.py", 0.75, 2700, models_from=[str(seeds)])
    compute = summaries.compute_of([own, chosen], "python -m experiment.aggregate own hp --summary s.json")
    assert [c["name"] for c in compute["sweeps"]] == ["own", "hp", "seeds", "srch", "twins"]  # each once
    assert compute["sweeps"][1]["hyperparameters_from"] == ["srch"]
    assert compute["total"] == {"sweeps": 5, "jobs": 5, "wall_hours": 3.5, "cpu_hours": 3.5}
    # the commands run in an order that works: the search before the sweep that takes its choices
    assert [c["name"] for c in compute_table.in_order(compute)] == ["seeds", "twins", "own", "srch", "hp"]
    # a summary that keeps hp's rows keeps the cost of everything standing behind them
    assert {c["name"] for c in summaries._standing_behind(compute["sweeps"], {"hp"})} == {"hp", "seeds", "srch", "twins"}
