"""Omniglot meta-training end to end on a generated tree (tiny images and network), in-process.

Samplers (order, determinism, class split, the presets' layouts), one step of every method,
kill-and-resume equals an uninterrupted run, the seed README's command, one-line errors. The
last test reads ../shared/omniglot and skips when it is absent.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import oml_omniglot
from datasets.omniglot import load_omniglot, to_float
from datasets.omniglot_sampler import ImageBank, iid_batch, sample_oml, steps_per_epoch
from experiment.checkpoint import load_checkpoint
from experiment.evaluation.features import feature_bank
from experiment.evaluation.omniglot import Protocol, evaluate
from experiment.omniglot_presets import OMNIGLOT_PRESETS, build_model, config_from_checkpoint
from experiment.training.omniglot import OMLTraining, make_training
from tests.conftest import REPO, SHARED_OMNIGLOT, die_at_step
from tests.omniglot_fixtures import write_fake_both
from utils.cli import run_main
from utils.errors import UserError

N_FAKE = 12  # the fixture's 3 alphabets x 4 characters
TINY = ["--image-size", "14", "--channels", "4", "--strides", "2", "1", "--n-classes", str(N_FAKE), "--class-split", "6",
        "--no-progress", "--log-every", "2", "--save-every", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    write_fake_both(root, as_zip=True)
    return root


@pytest.fixture
def run_args(data, tmp_path):
    def make(*extra):
        return oml_omniglot.get_args_parser().parse_args(
            ["--path", str(data), "--cache-dir", str(data / "cache"), "--results-dir", str(tmp_path),
             "--nonstandard-data"] + TINY + list(extra))
    return make


def _oml_preset_sample(preset, seed=0):
    cfg = OMNIGLOT_PRESETS[preset]
    return sample_oml(np.random.default_rng(seed), n_classes=963, tasks=cfg["tasks"], update_step=cfg["update_step"],
                      held_out=cfg["held_out"], meta_random=cfg["meta_random"], class_split=cfg["class_split"],
                      meta_repeats_trajectory=cfg["meta_repeats_trajectory"])


# --- samplers -------------------------------------------------------------------------------------

def test_oml2020_sample_layout_and_class_split():
    for seed in range(20):
        s = _oml_preset_sample("oml2020", seed)
        assert len(s.traj_classes) == 15 and len(s.meta_classes) == 30
        assert len(set(s.classes)) == 3 and all(481 <= c <= 962 for c in s.classes)
        assert list(s.traj_classes) == list(np.repeat(s.classes, 5))  # class by class, 5 steps each
        assert all(c < 481 for c in s.meta_classes[:15])  # the random part: the other half
        assert list(s.meta_classes[15:]) == list(np.repeat(s.classes, 5))
        for i, _ in enumerate(s.classes):  # one shuffled pass: 5 steps then 5 held-out, disjoint
            steps, held = set(s.traj_drawers[5 * i:5 * i + 5]), set(s.meta_drawers[15 + 5 * i:15 + 5 * i + 5])
            assert len(steps) == 5 and len(held) == 5 and not steps & held
        pairs = list(zip(s.meta_classes[:15], s.meta_drawers[:15]))
        assert len(set(pairs)) == 15  # random images drawn without replacement


def test_paper_and_2019_layouts():
    paper = _oml_preset_sample("oml2020paper")
    assert len(paper.traj_classes) == 15 and len(paper.meta_classes) == 15
    assert list(paper.meta_classes) == list(np.repeat(paper.classes, 5))
    seen_low = any(c < 481 for seed in range(30) for c in _oml_preset_sample("oml2020paper", seed).classes)
    assert seen_low  # no class split: trajectories come from all 963 classes
    mrcl = _oml_preset_sample("mrcl2019")
    assert len(mrcl.traj_classes) == 20 and len(mrcl.meta_classes) == 84
    assert sorted(mrcl.traj_drawers) == list(range(20))  # all 20 images of the one class
    again = mrcl.meta_drawers[64:]
    assert sorted(again) == list(range(20)) and list(again) != list(mrcl.traj_drawers)  # reshuffled
    assert set(mrcl.meta_classes[64:]) == set(mrcl.classes)


def test_samplers_are_deterministic():
    a, b = _oml_preset_sample("oml2020", 5), _oml_preset_sample("oml2020", 5)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("traj_classes", "traj_drawers", "meta_classes", "meta_drawers"))
    assert not np.array_equal(a.traj_classes, _oml_preset_sample("oml2020", 6).traj_classes)
    per_epoch = steps_per_epoch(12, 50)
    batches = [iid_batch((1, 2), step, n_classes=12, batch_size=50) for step in range(per_epoch)]
    flat = np.concatenate([c * 20 + d for c, d in batches])
    assert sorted(flat) == list(range(240))  # one epoch: every image exactly once
    again = iid_batch((1, 2), 3, n_classes=12, batch_size=50)
    assert all(np.array_equal(x, y) for x, y in zip(again, batches[3]))
    next_epoch = iid_batch((1, 2), per_epoch, n_classes=12, batch_size=50)
    assert not np.array_equal(next_epoch[0], batches[0][0])


def test_image_bank_gather_is_to_float(data):
    split = load_omniglot(data, "background", 14, cache_dir=False, progress=False)
    bank = ImageBank(split.images, "cpu")
    c, d = np.array([3, 0, 11]), np.array([19, 0, 7])
    assert torch.equal(bank.gather(c, d), to_float(split.images[c, d]))
    assert bank.gather(c, d).shape == (3, 1, 14, 14)


# --- training --------------------------------------------------------------------------------------

def _tiny_task(data, method, **over):
    args = oml_omniglot.get_args_parser().parse_args(TINY + ["--method", method]
                                                     + [f"--{k.replace('_', '-')}={v}" for k, v in over.items()])
    cfg = oml_omniglot._config(args)
    images = load_omniglot(data, "background", 14, cache_dir=data / "cache", progress=False).images
    return make_training(cfg, "cpu", images)


def test_oml_step_resets_the_trajectory_rows_and_learns(data):
    task = _tiny_task(data, "oml", class_split=6)
    assert isinstance(task, OMLTraining)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    rng_state = task.rng.bit_generator.state
    classes = task.sample().classes
    task.rng.bit_generator.state = rng_state  # step() draws the same sample
    metrics = task.step()
    assert set(metrics) >= {"loss", "meta_loss_before", "accuracy_before", "accuracy_after",
                            "accuracy_after_trajectory_classes", "accuracy_after_random"}
    assert all(np.isfinite(v) for v in metrics.values()) and 0 <= metrics["accuracy_after"] <= 1
    assert metrics["loss"] < metrics["meta_loss_before"]  # the inner loop learned the new classes
    after = task.model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in after)  # Adam moved every tensor
    weight = "pln.0.weight"
    changed = (after[weight] - before[weight]).abs().amax(1)
    # The reset rows jump to fresh Kaiming draws; the other rows move by about one Adam step.
    assert changed[classes].min() > 10 * changed[np.setdiff1d(np.arange(N_FAKE), classes)].max()


def test_no_reset_keeps_the_rows(data):
    task = _tiny_task(data, "oml", class_split=6)
    task.cfg.reset = False
    assert oml_omniglot._config(oml_omniglot.get_args_parser().parse_args(TINY + ["--class-split", "6", "--no-reset"])).reset is False
    before = task.model.pln[0].weight.detach().clone()
    task.step()
    assert (task.model.pln[0].weight - before).abs().max() < 2 * task.cfg.meta_lr  # one Adam step, no re-draw


@pytest.mark.parametrize("method", ["pretraining", "srnn"])
def test_iid_methods_reduce_their_loss(data, method):
    task = _tiny_task(data, method, class_split=6, iid_batch=48, iid_lr=3e-3)
    losses = [task.step()["cross_entropy"] for _ in range(40)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3


def test_srnn_step_adds_the_set_sparsity_penalty_of_its_batch(data):
    """The penalty reported is set_kl_sparsity of this step's representation, it is added to the
    cross-entropy, and its gradient changes the update (pretraining from the same start differs)."""
    tasks = {m: _tiny_task(data, m, class_split=6, iid_batch=48, iid_lr=3e-3) for m in ("pretraining", "srnn")}
    task = tasks["srnn"]
    assert all(torch.equal(a, b) for a, b in zip(tasks["pretraining"].model.state_dict().values(),
                                                task.model.state_dict().values()))  # the same start
    classes, drawers = iid_batch(task.entropy, task.steps_done, n_classes=task.cfg.n_classes, batch_size=48)
    with torch.no_grad():
        rep = task.model.rln(task.bank.gather(classes, drawers))
    units = rep.mean(0)
    r = task.cfg.srnn_beta / (units + 1e-4)
    by_hand = torch.where(units > task.cfg.srnn_beta, r - torch.log(r) - 1, torch.zeros_like(r)).mean().item()
    assert by_hand > 0.05 and (units <= task.cfg.srnn_beta).any()  # both branches of the penalty occur
    metrics = task.step()
    assert metrics["sparsity_penalty"] == pytest.approx(by_hand, rel=1e-5)
    assert metrics["loss"] == pytest.approx(metrics["cross_entropy"] + task.cfg.srnn_weight * by_hand, rel=1e-5)
    plain = tasks["pretraining"].step()
    assert "sparsity_penalty" not in plain and plain["loss"] == plain["cross_entropy"]
    assert plain["cross_entropy"] == pytest.approx(metrics["cross_entropy"], rel=1e-6)  # same batch, same weights
    moved = [not torch.equal(a, b) for a, b in zip(tasks["pretraining"].model.rln.state_dict().values(),
                                                   task.model.rln.state_dict().values())]
    assert any(moved)  # the penalty's gradient reached the RLN


def test_run_folder_and_checkpoint(run_args, data):
    run = oml_omniglot.main(run_args("--steps", "4", "--class-split", "6", "--quick-eval", "8"))
    for name in ("config.json", "metadata.json", "metrics.jsonl", "checkpoint.pt", "quick_eval.json"):
        assert (run / name).is_file(), name
    assert run.parent.name == "omniglot"
    payload = load_checkpoint(run, benchmark="omniglot")
    config = config_from_checkpoint(payload)
    model = build_model(config)
    model.load_state_dict(payload["state_dict"])  # what evaluation does
    assert (config.image_size, config.channels, config.strides, config.class_split) == (14, 4, (2, 1), 6)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    assert json.loads((run / "metadata.json").read_text())["data_path"]
    quick = json.loads((run / "quick_eval.json").read_text())
    assert set(quick) == {"split", "trained", "random"} and quick["split"] == "test"
    # The numbers are the shrunk protocol's on the checkpoint's network and on a random one of its
    # shape (seed + 1), both with a zero output layer, on 8 evaluation classes. (The generated images
    # of a class are unrelated drawings, so both are near chance: only the exact values tell them apart.)
    evaluation = load_omniglot(data, "evaluation", 14, cache_dir=False, progress=False)
    torch.manual_seed(config.seed + 1)
    networks = {"random": build_model(config), "trained": model}
    protocol = Protocol(reset="zero", runs=3, search_runs=3, seed=config.seed)
    for name, net in networks.items():
        bank = feature_bank(net.rln.eval(), evaluation, cache_dir=False)
        entry = evaluate(net.pln, bank, (8,), protocol)["by_classes"]["8"]
        assert quick[name] == {"held_out_accuracy": entry["held_out_accuracy"]["mean"], "trajectory_accuracy": entry["trajectory_accuracy"]["mean"],
                               "lr": entry["lr"]}, name
    assert quick["trained"] != quick["random"]


def test_default_iid_steps_are_epochs(run_args):
    args = run_args("--method", "pretraining", "--iid-epochs", "2", "--iid-batch", "100")
    assert oml_omniglot._config(args).steps == 2 * steps_per_epoch(N_FAKE, 100)


def _resume(run, cache, *flags):
    oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(["--resume", str(run), *flags, "--no-progress",
                                                                  "--cache-dir", str(cache), "--nonstandard-data"]))


def _assert_same_run(whole, other):
    a = torch.load(whole / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(other / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "metrics.jsonl").read_bytes() == (other / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("method", ["oml", "pretraining"])
def test_killed_run_resumes_byte_for_byte(run_args, tmp_path, monkeypatch, method):
    extra = ["--steps", "8", "--class-split", "6", "--method", method, *(["--iid-batch", "32"] if method != "oml" else [])]
    whole = oml_omniglot.main(run_args(*extra, "--name", "whole"))
    from experiment.training import omniglot
    cls = omniglot.OMLTraining if method == "oml" else omniglot.IIDTraining
    revive = die_at_step(monkeypatch, cls, 7)  # killed between the checkpoints at 4 and 8
    with pytest.raises(KeyboardInterrupt):
        oml_omniglot.main(run_args(*extra, "--name", "killed"))
    revive()
    killed = whole.parent / "killed_1"
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 4
    _resume(killed, whole.parent / "c")
    _assert_same_run(whole, killed)


def test_a_finished_run_extended_by_resume_equals_the_longer_run(run_args):
    """`--resume RUN --steps 2N` on a finished N-step run is the 2N-step run (no rate schedule; the
    data stream's state is checkpointed and goes on where it stopped): docs/cpu_wide.md scores 10,000- and
    20,000-step candidates from one run each, evaluated before and after such an extension."""
    whole = oml_omniglot.main(run_args("--steps", "8", "--class-split", "6", "--name", "whole"))
    short = oml_omniglot.main(run_args("--steps", "4", "--class-split", "6", "--name", "short"))
    _resume(short, whole.parent / "c", "--steps", "8")
    _assert_same_run(whole, short)
    assert json.loads((short / "config.json").read_text())["steps"] == 8


def test_a_dead_representation_stops_the_run_with_its_checkpoint(run_args, monkeypatch):
    """A cpu_wide pretraining seed had every ReLU of its representation at 0 from step 200 on and
    would have trained (and been evaluated) for 1,700 more steps at chance."""
    from experiment.training import omniglot
    original = omniglot.IIDTraining.__init__

    def dead_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        last = [m for m in self.model.rln.modules() if getattr(m, "bias", None) is not None][-1]
        with torch.no_grad():
            last.bias.fill_(-1e4)  # every pre-activation far below 0: each unit outputs 0 on every image
    monkeypatch.setattr(omniglot.IIDTraining, "__init__", dead_init)
    with pytest.raises(UserError, match="training cannot recover: every representation unit has output 0") as err:
        oml_omniglot.main(run_args("--method", "pretraining", "--steps", "400", "--iid-batch", "16"))
    assert f"for {omniglot.DEAD_STEPS} steps" in str(err.value)
    assert f"at step {omniglot.DEAD_STEPS} (the checkpoint of step {omniglot.DEAD_STEPS - 4} is kept)" in str(err.value)


def test_seed_readme_command_selects_mrcl2019(data, tmp_path):
    command = ["--rln", "6", "--update_lr", "0.03", "--name", "mrcl_omniglot", "--update_step", "20", "--steps", "15000"]
    config = oml_omniglot._config(oml_omniglot.get_args_parser().parse_args(command))
    assert (config.preset, config.first_order, config.pln_hidden, config.tasks, config.update_step) == ("mrcl2019", True, 1024, 1, 20)
    assert (config.meta_random, config.meta_repeats_trajectory, config.class_split, config.steps) == (64, True, None, 15000)
    assert (config.image_size, config.channels, config.strides) == (84, 256, (2, 1, 2, 1, 2, 2))
    head = ["--update_lr", "0.03", "--meta_lr", "1e-4", "--name", "OML_Omniglot/", "--tasks", "3", "--update_step", "5", "--steps", "700000", "--rank", "0"]
    assert oml_omniglot._config(oml_omniglot.get_args_parser().parse_args(head)).preset == "oml2020"
    # As written, on the generated tree (12 classes, small images) and two steps.
    parser = oml_omniglot.get_args_parser()
    args = parser.parse_args(command + ["--path", str(data), "--cache-dir", str(data / "cache"),
                                        "--results-dir", str(tmp_path), "--steps", "2", "--n-classes", str(N_FAKE), "--class-split", "6",
                                        "--image-size", "43", "--channels", "8", "--no-progress", "--nonstandard-data"])
    run = oml_omniglot.main(args)
    assert run.name == "mrcl_omniglot_1"
    assert config_from_checkpoint(load_checkpoint(run)).pln_hidden == 1024


def _cli(*args):
    return subprocess.run([sys.executable, "oml_omniglot.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def _error_of(argv, capsys):
    """What the script prints for bad input (in-process: run_main, as `python oml_omniglot.py`)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(oml_omniglot.main, oml_omniglot.get_args_parser(), argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_bad_input_is_a_one_line_error(tmp_path, data, capsys):
    sine = tmp_path / "sine.pt"
    torch.save({"format": 1, "benchmark": "sine", "method": "oml", "config": {}, "state_dict": {}, "step": 0}, sine)
    result = _cli("--resume", str(sine))  # once through a real process
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "is a sine checkpoint" in result.stderr, result.stderr
    cases = [
        (["--path", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path / "r")], "no Omniglot data at"),
        (["--rln", "5"], "--rln 5 is not supported"),
        (["--preset", "cpu", "--update_step", "18"], "exceed a class's 20 images"),
        (["--preset", "nope"], "unknown preset"),
        (["--path", str(data), "--results-dir", str(tmp_path / "r"), "--cache-dir", str(data / "cache"),
          "--image-size", "43", "--channels", "2", "--nonstandard-data"], "fewer than the 963"),
    ]
    for args, message in cases:
        err = _error_of(args, capsys)
        assert err.strip().count("\n") == 0 and message in err, (args, err)
    assert not (tmp_path / "r").exists()  # no run folder for a run that never started
    with pytest.raises(UserError, match="is a sine checkpoint"):
        config_from_checkpoint({"benchmark": "sine", "config": {}})


# --- the real data ------------------------------------------------------------------------------

def test_real_data_short_meta_training(tmp_path):
    if not SHARED_OMNIGLOT.is_dir():
        pytest.skip(f"no real Omniglot at {SHARED_OMNIGLOT}")
    args = oml_omniglot.get_args_parser().parse_args(
        ["--preset", "cpu", "--path", str(SHARED_OMNIGLOT), "--results-dir", str(tmp_path), "--steps", "6",
         "--log-every", "3", "--no-progress"])
    run = oml_omniglot.main(args)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert all(np.isfinite(list(r.values())).all() for r in records)
    assert records[-1]["accuracy_after"] > records[-1]["accuracy_before"]
    assert config_from_checkpoint(load_checkpoint(run)).n_classes == 963
