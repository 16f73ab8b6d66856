"""The GPU path (issue #14): the one-GPU reproduction script, and CUDA giving the CPU's numbers.

- scripts/reproduce_omniglot_gpu.sh runs end to end in its quick mode on a generated Omniglot
  tree (so it runs without the data and without a GPU): a run folder with its checkpoint, an
  evaluation with its results.json, and a failed step stops the script.
- Parity checks compare a device with the CPU on the same inputs and the same initial weights,
  in true float32 (TF32 off: cuDNN convolutions default to it): the first meta-gradient of the
  sine and Omniglot OML steps, then a few Adam steps; the Omniglot evaluation's chosen rates,
  search scores, per-run accuracies and final weights (the portable engine there against the
  CPU's default, native when numba runs). Each check runs here against the CPU itself (the
  evaluation check then compares the portable engine with native) and against CUDA where torch
  sees a GPU; the CUDA tests skip otherwise.
"""
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from experiment.config import resolve
from experiment.evaluation import omniglot as oe
from experiment.evaluation import online_learner as ol
from experiment.evaluation.features import FeatureBank
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig
from experiment.sine_presets import SINE_PRESETS, SineConfig
from experiment.training import omniglot as omniglot_training
from experiment.training import sine as sine_training
from model.meta_learner import meta_loss
from tests.conftest import REPO
from tests.omniglot_fixtures import write_fake_both
from utils.device import cuda_math, resolve_device, set_cuda_math

SCRIPT = REPO / "scripts" / "reproduce_omniglot_gpu.sh"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
# The generated tree has 3 alphabets x 4 characters per split: the script's oml2020 run needs the
# class counts to match, and the class split inside them.
TREE_FLAGS = "--n-classes 12 --class-split 6 --nonstandard-data"
# Float32 on two devices: different kernels sum in different orders. A wrong input, weight or
# random draw moves gradients by O(1) of their scale; rounding by ~1e-6 of it.
GRAD_RTOL, GRAD_ATOL_OF_SCALE = 1e-3, 1e-4


# --- the script -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_fake_both(tmp_path_factory.mktemp("omniglot"), as_zip=True, size=28)


def _start_script(tree, out, device="cpu", **env) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "OMNIGLOT": str(tree),
                   "RESULTS": str(out), "OML_CACHE_DIR": str(out / "cache"), "DEVICE": device, "STEPS": "3",
                   "QUICK": "1", "TRAIN_FLAGS": TREE_FLAGS, "EVAL_FLAGS": "--nonstandard-data", **env}
    return subprocess.Popen(["bash", str(SCRIPT)], cwd=out, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:  # timed out (or interrupted): not left running
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _run_script(tree, out, device="cpu", **env) -> subprocess.CompletedProcess:
    return _finish(_start_script(tree, out, device, **env))


def _folders(out):
    (train,) = out.glob("*/omniglot/oml2020_quick_1")
    (evaluation,) = out.glob("*/omniglot_eval/oml2020_quick_eval_1")
    return train, evaluation


def test_script_quick_mode_end_to_end_on_cpu(tree, tmp_path):
    done = _run_script(tree, tmp_path, TF32="1")  # passed on to both scripts; nothing to switch on a CPU
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    train, evaluation = _folders(tmp_path)
    assert (train / "checkpoint.pt").is_file()
    metrics = [json.loads(line) for line in (train / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    config = json.loads((train / "config.json").read_text())
    assert (config["preset"], config["steps"], config["first_order"], config["pln_hidden"]) == ("oml2020", 3, False, 0)
    result = json.loads((evaluation / "results.json").read_text())
    assert result["schedule"] == [10] and len(result["by_classes"]["10"]["runs"]["held_out_accuracy"]) == 2
    assert result["protocol"]["run_batch"] == 1  # the CPU default; 50 on a GPU
    for folder in (train, evaluation):
        metadata = json.loads((folder / "metadata.json").read_text())
        assert (metadata["device"], metadata["cuda_math"]) == ("cpu", None) and "--tf32" in metadata["argv"]
    # the summary names both folders, and the logs hold what the scripts printed
    assert f"-> {train}" in done.stdout and f"-> {evaluation / 'results.json'}" in done.stdout
    logs = sorted((tmp_path / "logs").glob("oml2020_quick_*"))
    assert [log.name.rsplit("_", 1)[1] for log in logs] == ["eval.log", "train.log"]
    assert f"run folder: {train}" in logs[1].read_text()


def test_script_stops_at_a_failing_step(tmp_path):
    """pipefail: the training script's error is the script's, not tee's success."""
    processes = [_start_script(tmp_path / "no_such_folder", tmp_path),  # both at once: separate folders
                 _start_script(tmp_path, tmp_path / "bad_device", device="gpu")]
    no_data, bad_device = (_finish(process) for process in processes)
    assert no_data.returncode != 0
    assert "error:" in no_data.stdout + no_data.stderr
    assert not list(tmp_path.glob("*/omniglot_eval"))  # nothing evaluated
    assert bad_device.returncode != 0 and "error: --device 'gpu'" in bad_device.stderr
    assert not (tmp_path / "bad_device" / "logs").exists()  # refused before anything is written


@needs_cuda
def test_script_on_cuda_matches_the_cpu_run(tree, tmp_path):
    """--device auto picks the GPU; the evaluation batches its runs there with the portable engine.
    The scripts compute in float32 there (utils/device.py); the tolerance allows for the different
    summation orders of a few training steps."""
    cpu = _run_script(tree, tmp_path / "cpu")
    gpu = _run_script(tree, tmp_path / "gpu", device="auto")
    assert cpu.returncode == 0 and gpu.returncode == 0, gpu.stdout[-2000:] + gpu.stderr[-2000:]
    (cpu_train, _), (gpu_train, gpu_eval) = _folders(tmp_path / "cpu"), _folders(tmp_path / "gpu")
    assert json.loads((gpu_train / "metadata.json").read_text())["device"].startswith("cuda")
    result = json.loads((gpu_eval / "results.json").read_text())
    assert (result["protocol"]["engine"], result["protocol"]["run_batch"]) == ("portable", 50)
    losses = [[json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
              for folder in (cpu_train, gpu_train)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-2)


# --- parity helpers -------------------------------------------------------------------------------

# The process-wide CUDA arithmetic switches utils.device.set_cuda_math sets (they exist on a CPU build too).
SWITCHES = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"),
            (torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "deterministic")]


def switch_states() -> list:
    return [getattr(owner, name) for owner, name in SWITCHES]


@contextlib.contextmanager
def restored_switches():
    saved = switch_states()
    algorithms = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        for (owner, name), value in zip(SWITCHES, saved):
            setattr(owner, name, value)
        torch.use_deterministic_algorithms(algorithms[0], warn_only=algorithms[1])
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


@contextlib.contextmanager
def full_float32():
    """The scripts' default CUDA arithmetic (true float32, deterministic cuDNN) while a parity
    check runs, whatever the process had before; on a CPU these switches change nothing."""
    with restored_switches():
        set_cuda_math(False)
        yield


def _assert_close_to_scale(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.cpu(), e, rtol=GRAD_RTOL, atol=GRAD_ATOL_OF_SCALE * float(e.abs().max()) + 1e-12)


def _meta_steps(make_task, device, loss_fn, steps=3):
    """(first meta-loss, its gradients, the metrics of `steps` training steps, final weights) of a
    training task built on `device` (its weights come from the config's seed on the CPU, its
    batches from a numpy stream: the same on every device)."""
    with full_float32():
        task = make_task(device)
        batch = task.batch()
        first = meta_loss(task.model, *batch, loss_fn, task.rule)
        grads = [g.cpu() for g in torch.autograd.grad(first.loss, list(task.model.parameters()), retain_graph=True)]
        task.update(first.loss)
        metrics = [task.step() for _ in range(steps - 1)]
    return first.loss.item(), grads, metrics, [p.detach().cpu() for p in task.model.parameters()]


def _assert_same_meta_steps(cpu, other):
    loss, grads, metrics, weights = cpu
    assert other[0] == pytest.approx(loss, rel=1e-4)
    _assert_close_to_scale(other[1], grads)
    for a, b in zip(other[2], metrics, strict=True):
        assert a.keys() == b.keys()
        # an accuracy may move by one image of the 15-30 scored where two logits tie within rounding
        assert all(a[k] == pytest.approx(b[k], rel=1e-4, abs=0.07 if "accuracy" in k else 1e-6) for k in a)
    # Adam moves each weight by about meta_lr per step whatever the gradient's size, so a
    # near-zero gradient whose sign differs by rounding moves a weight by up to ~2 meta_lr.
    for a, b in zip(other[3], weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-3)


def _sine_task(device):
    cfg = resolve(SineConfig, SINE_PRESETS, "oml2020", {})
    return sine_training.OMLTraining(cfg, torch.device(device))


TINY_OMNIGLOT = {"image_size": 20, "channels": 8, "strides": (2, 1, 2), "n_outputs": 16, "n_classes": 8, "class_split": 4}


def _omniglot_task(device):
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "oml2020", TINY_OMNIGLOT)  # second order, linear PLN
    images = np.random.default_rng(0).integers(0, 256, (cfg.n_classes, 20, cfg.image_size, cfg.image_size), dtype=np.uint8)
    return omniglot_training.OMLTraining(cfg, torch.device(device), images)


def _feature_bank(device):
    """Sparse non-negative features like a ReLU RLN's (~15% non-zero), 20 classes."""
    gen = torch.Generator().manual_seed(4)
    train = torch.relu(torch.randn(20, 15, 48, generator=gen) - 1.0) * 2
    test = torch.relu(torch.randn(20, 5, 48, generator=gen) - 1.0) * 2
    return FeatureBank(train.to(device), test.to(device), "synthetic-gpu-parity")


def _pln():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(48, 24))


def _evaluation(device, engine):
    protocol = oe.Protocol(runs=4, search_runs=2, engine=engine, run_batch=4)
    with full_float32():
        bank = _feature_bank(device)
        result = oe.evaluate(_pln(), bank, (5, 10), protocol, device=device, cache_dir=False)
        specs = oe.run_specs(7, "eval", 10, 4, bank.n_classes, False, 1)
        learner = ol.OnlineLearner(_pln(), protocol, device=device)
        finals = learner.train(bank.train, specs, 1e-2)
    return result, [[p.cpu() for p in run] for run in finals]


def _assert_same_evaluation(reference, other):
    (expected, expected_weights), (result, weights) = reference, other
    for n, entry in expected["by_classes"].items():
        got = result["by_classes"][n]
        one_image = 1 / (15 * int(n))
        assert got["lr"] == entry["lr"]
        assert got["lr_search"]["best_per_search_run"] == entry["lr_search"]["best_per_search_run"]
        np.testing.assert_allclose(got["lr_search"]["scores"], entry["lr_search"]["scores"], atol=one_image + 1e-9)
        assert got["runs"]["classes"] == entry["runs"]["classes"]
        # equal unless two logits tie within rounding: then one image may flip
        for key in ("trajectory_accuracy", "held_out_accuracy"):
            np.testing.assert_allclose(got["runs"][key], entry["runs"][key], atol=one_image + 1e-9)
    for run, expected_run in zip(weights, expected_weights, strict=True):
        for a, b in zip(run, expected_run, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# --- parity, here against the CPU itself ----------------------------------------------------------

def test_parity_checks_run_on_the_cpu():
    """The checks the CUDA tests make, CPU against CPU: they run (and are not vacuous: the
    evaluation compares the portable engine with the CPU default, native where numba runs)."""
    _assert_same_meta_steps(_meta_steps(_omniglot_task, "cpu", F.cross_entropy),
                            _meta_steps(_omniglot_task, "cpu", F.cross_entropy))
    reference = _evaluation("cpu", "auto")
    portable = _evaluation("cpu", "portable")
    assert portable[0]["protocol"]["engine"] == "portable"
    _assert_same_evaluation(reference, portable)


@pytest.fixture
def cuda_switches():
    """The switches' current states, as a function; restored after the test."""
    with restored_switches():
        yield switch_states


def test_device_auto_picks_cuda_when_torch_sees_it(monkeypatch, cuda_switches):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_arithmetic_is_float32_and_deterministic_unless_tf32_is_asked_for(monkeypatch, cuda_switches):
    """[matmul TF32, cuDNN TF32, cuDNN autotuning, deterministic cuDNN] after resolving the device;
    torch's own default would leave cuDNN convolutions on TF32."""
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = True, True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == torch.device("cuda")
    assert cuda_switches() == [False, False, False, True]
    assert cuda_math(torch.device("cuda")) == "float32, deterministic cuDNN"
    resolve_device("auto", tf32=True)
    assert cuda_switches() == [True, True, True, False]
    assert cuda_math(torch.device("cuda:0")) == "tf32+autotune"
    before = cuda_switches()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert cuda_switches() == before and cuda_math(torch.device("cpu")) is None  # a CPU run touches nothing


@pytest.mark.parametrize("script", ["oml_omniglot", "oml_regression", "evaluate_omniglot", "evaluate_regression",
                                    "visualize_representations"])
def test_every_script_takes_tf32(script):
    import importlib
    parser = importlib.import_module(script).get_args_parser()
    assert parser.parse_args(["--tf32"]).tf32 is True and parser.parse_args([]).tf32 is False


def test_tf32_may_change_on_resume():
    from experiment.training.loop import RESUME_FLAGS
    assert {"device", "tf32"} <= RESUME_FLAGS


# --- parity on CUDA (skipped without a GPU) -------------------------------------------------------

@needs_cuda
def test_device_auto_is_cuda_on_a_gpu_machine():
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert torch.ones(1, device=device).device.type == "cuda"


@needs_cuda
def test_sine_meta_step_on_cuda_matches_cpu():
    _assert_same_meta_steps(_meta_steps(_sine_task, "cpu", F.mse_loss), _meta_steps(_sine_task, "cuda", F.mse_loss))


@needs_cuda
def test_omniglot_meta_step_on_cuda_matches_cpu():
    _assert_same_meta_steps(_meta_steps(_omniglot_task, "cpu", F.cross_entropy),
                            _meta_steps(_omniglot_task, "cuda", F.cross_entropy))


@needs_cuda
def test_omniglot_evaluation_on_cuda_matches_cpu():
    """The CPU's default engine (native where numba runs) against the portable engine on CUDA,
    the engine --device auto picks there."""
    gpu = _evaluation("cuda", "auto")
    assert gpu[0]["protocol"]["engine"] == "portable"
    _assert_same_evaluation(_evaluation("cpu", "auto"), gpu)


def test_default_cuda_arithmetic_asks_for_deterministic_algorithms_and_a_fixed_cublas_workspace(monkeypatch,
                                                                                                 cuda_switches):
    """Deterministic cuDNN alone leaves cuBLAS reductions and scatter kernels free to differ run to run."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    set_cuda_math(False)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    set_cuda_math(False)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # a user's own setting wins
    set_cuda_math(True)
    assert not torch.are_deterministic_algorithms_enabled()
