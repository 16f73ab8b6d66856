"""experiment/sweep.py's refusals and its semantics as a command.

Every bad sweep flag, a bad list member of the script's flags, and a script that is not one of this
repository's is one `error:` line, exit 2, with nothing written (and, for a script, nothing of it
run). A sweep whose jobs fail exits 1 with a one-line summary naming them; two launches of the same
sweep at once: the second refuses in one line and no job runs twice; relaunching with another
spelling of the python path finds the same sweep.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiment import sweep, sweep_plan, sweep_records
from experiment.lock import LOCK_NAME
from tests.conftest import REPO

TINY = ["--preset", "oml2020", "--width", "16", "--steps", "10", "--log-every", "5", "--save-every", "5",
        "--eval-runs", "0", "--no-progress"]


def sweep_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        sweep.cli([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


BAD = {
    "--timeout 0": (["--timeout", "0"], "--timeout must be in 1.."),
    "--timeout -5": (["--timeout", "-5"], "--timeout must be in 1.."),
    "--timeout a millennium": (["--timeout", str(1000 * 366 * 24 * 60)], "--timeout must be in 1.."),
    "--timeout 1.5": (["--timeout", "1.5"], "invalid int value: '1.5'"),
    "--mem 0": (["--executor", "slurm", "--mem", "0"], "--mem must be in GB"),
    "--mem nan": (["--executor", "slurm", "--mem", "nan"], "--mem must be in GB"),
    "--mem inf": (["--executor", "slurm", "--mem", "inf"], "--mem must be in GB"),
    "--mem -4": (["--executor", "slurm", "--mem", "-4"], "--mem must be in GB"),
    "--gpus-per-job 0": (["--executor", "slurm", "--gpus-per-job", "0"], "--gpus-per-job must be in 1.."),
    "--gpus-per-job 1000": (["--executor", "slurm", "--gpus-per-job", "1000"], "--gpus-per-job must be in 1.."),
    "--cpus-per-job 0": (["--executor", "slurm", "--cpus-per-job", "0"], "--cpus-per-job must be in 1.."),
    "--cpus-per-job 2.5": (["--executor", "slurm", "--cpus-per-job", "2.5"], "invalid int value"),
    "--max-parallel 0": (["--max-parallel", "0"], "--max-parallel must be at least 1"),
    "--requeue-limit -1": (["--requeue-limit", "-1"], "--requeue-limit must be in 0.."),
    "--name ''": (["--name", ""], "--name '' must be a plain folder name"),
    "--name a/b": (["--name", "a/b"], "--name 'a/b' must be a plain folder name"),
    "--name ..": (["--name", ".."], "--name '..' must be a plain folder name"),
    "--partition with local": (["--partition", "gpu"], "--partition: SLURM settings, which --executor local"),
    "--slurm-option with local": (["--slurm-option", "exclusive"], "--slurm-option: SLURM settings"),
    "--account ''": (["--executor", "slurm", "--account", ""], "--account '' must be a non-empty name"),
    "--qos with a newline": (["--executor", "slurm", "--qos", "a\nb"], "--qos 'a\\nb' must be a non-empty name"),
    "--slurm-option time=5": (["--executor", "slurm", "--slurm-option", "time=5"], "through --timeout"),
    "--slurm-option array=0-3": (["--executor", "slurm", "--slurm-option", "array=0-3"], "through --max-parallel"),
    "--slurm-option =x": (["--executor", "slurm", "--slurm-option", "=x"], "give an sbatch long option"),
    "--slurm-option p=gpu": (["--executor", "slurm", "--slurm-option", "p=gpu"], "give an sbatch long option"),
    "--slurm-option reservation=": (["--executor", "slurm", "--slurm-option", "reservation="], "must be non-empty"),
    "--slurm-option twice": (["--executor", "slurm", "--slurm-option", "exclusive", "--slurm-option", "exclusive"],
                             "given twice"),
    "a nan in a swept list": (["--update_lr", "0.1", "nan"], "--update_lr nan: every value of a sweep must be a finite"),
    "an inf in a swept list": (["--meta_lr", "inf", "0.1"], "--meta_lr inf: every value of a sweep must be a finite"),
    "a value the script refuses": (["--width", "x"], "oml_regression.py refused its command: argument --width"),
    "a flag the sweep sets": (["--rank", "1"], "--rank is set by the sweep for each job"),
    "--executor pbs": (["--executor", "pbs"], "invalid choice: 'pbs'"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_flag_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    flags, message = BAD[case]
    results = tmp_path / "results"
    code, out, err = sweep_cli(["oml_regression.py", "--seed", "1", "2", *flags, "--results-dir", results], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err
    assert not results.exists() and out == ""


def test_a_results_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = sweep_cli(["oml_regression.py", "--seed", "1", "2", "--results-dir", tmp_path / "file"], capsys)
    assert code == 2 and err == f"error: --results-dir '{tmp_path / 'file'}': '{tmp_path / 'file'}' is a file, not a folder\n"


def test_no_script_other_than_the_repositorys_is_run_not_even_for_dry_run(tmp_path, capsys):
    planted = tmp_path / "oml_regression.py"  # a copy's name, not the repository's script
    planted.write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\ndef get_args_parser(): pass\nSWEEP = ()\n")
    for script in (planted, tmp_path / "missing.py", REPO / "README.md"):
        code, _, err = sweep_cli([script, "--seed", "1", "2", "--dry-run"], capsys)
        assert code == 2 and err.count("\n") == 1 and "is not one of them" in err
    assert not (tmp_path / "ran").exists()
    assert sweep_plan.sweepable_scripts() == ["evaluate_omniglot.py", "evaluate_regression.py", "oml_omniglot.py",
                                         "oml_regression.py"]


def test_failed_jobs_exit_1_with_one_line_naming_them(tmp_path, capsys):
    code, out, err = sweep_cli(["oml_regression.py", *TINY, "--seed", "1", "2", "--width", "0", "--name", "bad",
                                "--results-dir", tmp_path / "results", "--max-parallel", "2"], capsys)  # both at once
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("error: 2 of 2 jobs failed: r0 failed (error: --width") and "r1 failed (error: --width" in err
    assert "0 of 2 jobs finished" in out


def test_a_list_member_the_script_refuses_ends_in_one_line_and_no_run_folder(tmp_path, capsys):
    """The script checks every member of a swept list before it writes (not only the one its rank runs),
    so each job refuses at once with the script's own line; the sweep says so in one line, exit 1."""
    results = tmp_path / "results"
    code, _, err = sweep_cli(["oml_regression.py", *TINY, "--steps", "3", "0", "--results-dir", results, "--max-parallel", "2"],
                             capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("error: 2 of 2 jobs failed: r0 failed (error: --steps must be at least 1, got 0)")
    assert not list(results.glob("*/sine/*"))  # no run folder: the check comes before any write


def test_a_second_launch_of_the_same_sweep_refuses_and_no_job_runs_twice(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    argv = ["oml_regression.py", *TINY, "--seed", "1", "2", "--results-dir", str(results), "--name", "twice"]
    first = subprocess.Popen([sys.executable, "-m", "experiment.sweep", *argv], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(results.glob("*/sweeps/twice/sweep.lock")):
            time.sleep(0.05)
        code, _, err = sweep_cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and f"sweep folder '{results}" in err and \
            f"is in use by pid {first.pid}" in err, err
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    folder = sweep_records.find_sweep(results, "twice")
    assert [len(job["job_ids"]) for job in json.loads((folder / "sweep.json").read_text())["jobs"]] == [1, 1]
    assert sorted(p.name for p in results.glob("*/sine/*")) == ["twice_r0_1", "twice_r1_1"]
    assert not (folder / "sweep.lock").exists() and not list(results.rglob(LOCK_NAME))
    # relaunched through another spelling of the same interpreter (what sys.executable is in a process
    # started through a link; set here, not in a new process): the same sweep, nothing to run
    link = tmp_path / "python-link"
    link.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(link))
    code, out, err = sweep_cli([*argv, "--dry-run"], capsys)
    assert code == 0 and f"{link} " in out, out + err  # the jobs' commands are spelled with the link
    code, out, err = sweep_cli(argv, capsys)
    assert code == 0 and "every job of" in out, err
    assert not [p for p in results.glob("*/sine/*") if p.name.endswith("_2")]


def test_the_python_path_is_compared_resolved(tmp_path):
    link = tmp_path / "py"
    link.symlink_to(sys.executable)
    relative = os.path.relpath(sys.executable, Path.cwd())
    spellings = {sweep_records._same_command([spelling, "x.py"])[0] for spelling in (sys.executable, str(link), relative)}
    assert spellings == {os.path.realpath(sys.executable)}
