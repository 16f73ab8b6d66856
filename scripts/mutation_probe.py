"""A mutation probe: single-line changes to the maths and protocol code, each run against the tests
that should notice it. Not part of CI (minutes of CPU); docs/reliability.md ("Mutation testing")
has the last scores and the survivors left on purpose.

    python scripts/mutation_probe.py                       # every mutant, on the committed HEAD
    python scripts/mutation_probe.py --rev 580e00e         # ... on an older commit (a "before" score)
    python scripts/mutation_probe.py --only table2-window-shift --keep

The repository at `--rev` is exported (`git archive`, no .git, no caches) into a temporary folder,
never the working tree, and each mutant edits that copy, runs its target tests (`pytest -x`, a
timeout, OMP_NUM_THREADS=1, nice) and restores the file. A mutant is *killed* when the tests fail
(or time out), *survives* when they pass, and is *n/a* when its line is not in that commit (the code
moved; the mutant lists the spellings it knows). The target tests are first run unmutated; any test
that fails then (another change in progress) is left out of every mutant's run and named in the output.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONLINE = ("tests/test_online_engines.py",)
PROTOCOLS = ("tests/test_protocol_facts.py", "tests/test_omniglot_protocols.py", "tests/test_omniglot_eval.py")
TABLE2 = ("tests/test_protocol_facts.py", "tests/test_table2.py")
LEARNERS = ("tests/test_continual_learners.py",)
META = ("tests/test_meta_gradient.py", "tests/test_meta_gradient_classification.py", "tests/test_linear_inner_loop.py")
SCRATCH = ("tests/test_protocol_facts.py", "tests/test_omniglot_scratch.py")
DATA = ("tests/test_protocol_facts.py", "tests/test_omniglot_data.py")
TRAINING = ("tests/test_omniglot_training.py",)
SINE = ("tests/test_sine_eval.py",)
FACTS = ("tests/test_protocol_facts.py",)


@dataclass(frozen=True)
class Mutant:
    name: str
    sites: tuple  # ((path, old, new), ...): the first whose `old` occurs exactly once is applied
    tests: tuple
    what: str


def m(name, path, old, new, tests, what, *more_sites):
    return Mutant(name, ((path, old, new), *more_sites), tuple(tests), what)


MUTANTS = [
    # --- the online learner: model/online.py -------------------------------------------------------
    m("online-ce-grad-sign", "model/online.py", "labels] -= 1", "labels] += 1", ONLINE + LEARNERS,
      "softmax plus one-hot instead of minus"),
    m("online-adam-m-rate", "model/online.py", "m.lerp_(g, 1 - beta1)", "m.lerp_(g, beta1)", ONLINE,
      "Adam's first moment with the rates swapped"),
    m("online-adam-bias-correction", "model/online.py", "step_size = lr / (1 - beta1 ** step)",
      "step_size = lr * (1 - beta1 ** step)", ONLINE, "bias correction multiplied instead of divided"),
    m("online-adam-v-correction", "model/online.py", "div_((1 - beta2 ** step) ** 0.5)",
      "div_((1 - beta2 ** step) ** 1.0)", ONLINE, "second-moment correction without its square root"),
    m("online-relu-after-last", "model/online.py", "if i < n_layers - 1:", "if i < n_layers:",
      ONLINE + ("tests/test_omniglot_protocols.py",), "a ReLU after the PLN's output layer"),
    m("online-sgd-sign", "model/online.py", "w.sub_(gw, alpha=lr)", "w.add_(gw, alpha=lr)", ONLINE,
      "the closed-form SGD step goes uphill"),
    m("online-runs-sgd-sign", "model/online.py", "new.append((p - lr * g).requires_grad_())",
      "new.append((p + lr * g).requires_grad_())", SINE + FACTS, "the batched-runs SGD step (sine) goes uphill"),
    m("online-mse-sum", "model/online.py", "return ((out - y) ** 2).flatten(1).mean(1)",
      "return ((out - y) ** 2).flatten(1).sum(1)", SINE + FACTS, "per-run MSE summed instead of averaged"),
    # --- continual learners: model/continual/ --------------------------------------------------------
    m("ewc-penalty-grad-sign", "model/continual/ewc.py", "return [lam * (s * p - a) for",
      "return [lam * (s * p + a) for", LEARNERS, "EWC's penalty gradient with P added"),
    m("ewc-step-sign", "model/continual/ewc.py", ".sub_(a, alpha=self.lam)", ".add_(a, alpha=self.lam)",
      LEARNERS, "EWC's in-place step pulls away from the anchor"),
    m("ewc-anchor-square", "model/continual/ewc.py", "c.add_((f * t * t).sum())", "c.add_((f * t).sum())",
      LEARNERS, "EWC's penalty constant with theta* instead of theta*^2"),
    m("mer-reptile-skip", "model/continual/mer.py", "    if rate == 1.0:", "    if rate <= 1.0:", LEARNERS,
      "MER's Reptile interpolation never applied"),
    m("mer-batch-size", "model/continual/mer.py", "[*self.memory.sample(self.k - 1), (x, y)]",
      "[*self.memory.sample(self.k), (x, y)]", LEARNERS, "MER batches of k+1 samples"),
    m("reservoir-replace-bound", "model/continual/reservoir.py", "        if j < self.size:",
      "        if j <= self.size:", LEARNERS, "reservoir write off by one (IndexError or bias)"),
    m("reservoir-draw-range", "model/continual/reservoir.py", "j = int(self.rng.integers(self.seen))",
      "j = int(self.rng.integers(self.seen - 1))", LEARNERS, "reservoir slot drawn from 0..n-2"),
    m("er-no-write", "model/continual/reservoir.py", "        self.memory.add((x, y))\n\n    def end_task",
      "        pass\n\n    def end_task", LEARNERS, "ER never writes to its memory"),
    m("head-grad-not-mean", "model/continual/models.py", "        e /= len(y)\n        return loss.detach()",
      "        return loss.detach()", LEARNERS, "the linear head's gradient summed over the batch"),
    m("head-fisher-sum", "model/continual/models.py", "e2.mean(0)]", "e2.sum(0)]", LEARNERS,
      "the linear head's bias Fisher summed over samples"),
    m("network-fisher-not-squared", "model/continual/models.py", "t.addcmul_(g, g)", "t.add_(g)", LEARNERS,
      "the whole network's Fisher of gradients, not squared gradients"),
    m("continual-sgd-sign", "model/continual/sgd.py", "p.sub_(g, alpha=lr)", "p.add_(g, alpha=lr)", LEARNERS,
      "the shared SGD step goes uphill"),
    # --- the meta-objective: model/ ------------------------------------------------------------------
    m("meta-inner-sign", "model/meta_learner.py", "{name: p - rule.lr * g for", "{name: p + rule.lr * g for", META,
      "the inner SGD step goes uphill"),
    m("meta-second-order-off", "model/meta_learner.py", "create_graph=not rule.first_order",
      "create_graph=rule.first_order", META, "first and second order swapped"),
    m("meta-before-is-after", "model/meta_learner.py", "before = loss_fn(functional_call(pln, start,",
      "before = loss_fn(functional_call(pln, adapted,", META + TRAINING, "the unadapted loss taken after adapting"),
    m("kaiming-gain", "model/networks.py", "std = (2.0 / math.prod(shape[1:])) ** 0.5",
      "std = (1.0 / math.prod(shape[1:])) ** 0.5", PROTOCOLS, "Kaiming without the ReLU gain"),
    m("linear-loop-lr-sign", "model/linear_inner_loop.py", "wb = torch.add(wb, g if clip is None else "
      "g.clamp(-clip, clip), alpha=-lr)", "wb = torch.add(wb, g if clip is None else g.clamp(-clip, clip), "
      "alpha=lr)", META, "the closed-form MSE inner step goes uphill"),
    # --- datasets/ -----------------------------------------------------------------------------------
    m("split-train-drawers", "datasets/omniglot.py", "TRAIN_DRAWERS = 15", "TRAIN_DRAWERS = 14",
      DATA + PROTOCOLS, "14 training drawers, 6 held out"),
    m("split-held-out-home", "datasets/omniglot.py",
      "return per_drawer[:, :TRAIN_DRAWERS], per_drawer[:, TRAIN_DRAWERS:]",
      "return per_drawer[:, :TRAIN_DRAWERS], per_drawer[:, TRAIN_DRAWERS - 5:TRAIN_DRAWERS]", DATA + PROTOCOLS,
      "held-out images = five training images, in the split's one definition",
      ("datasets/omniglot.py", "return self.images[:, TRAIN_DRAWERS:]",
       "return self.images[:, TRAIN_DRAWERS - 5:TRAIN_DRAWERS]")),
    m("to-float-scale", "datasets/omniglot.py", "return x.div_(255.0)", "return x.div_(256.0)", DATA,
      "pixels scaled to [0, 255/256]"),
    m("sampler-meta-overlaps-trajectory", "datasets/omniglot_sampler.py",
      "meta_d.append(order[update_step:update_step + held_out])",
      "meta_d.append(order[update_step - 1:update_step - 1 + held_out])", TRAINING,
      "the meta set reuses the trajectory's last image"),
    m("sampler-trajectory-pool", "datasets/omniglot_sampler.py", "return np.arange(class_split or 0, n_classes)",
      "return np.arange(0, n_classes)", TRAINING, "trajectories drawn from the random-set classes too"),
    m("sampler-random-pool", "datasets/omniglot_sampler.py",
      "return np.arange(class_split if class_split else n_classes)", "return np.arange(n_classes)", TRAINING,
      "the random meta set drawn from the trajectory classes too"),
    m("sampler-iid-batches-overlap", "datasets/omniglot_sampler.py",
      "flat = order[position * batch_size:(position + 1) * batch_size]",
      "flat = order[position:position + batch_size]", TRAINING, "i.i.d. batches overlap within an epoch"),
    # --- the Fig. 4 protocol: experiment/evaluation/ ---------------------------------------------------
    m("features-held-out-leak", "experiment/evaluation/features.py",
      "bank = FeatureBank(train.contiguous(), test.contiguous(), key)",
      "bank = FeatureBank(train.contiguous(), train[:, -5:].contiguous(), key)", DATA + PROTOCOLS,
      "held-out features = the last five training images (the issue's survivor)",
      ("experiment/evaluation/features.py", "feats[:, TRAIN_DRAWERS:].contiguous(), key)",
       "feats[:, TRAIN_DRAWERS - 5:TRAIN_DRAWERS].contiguous(), key)")),
    m("scratch-held-out-leak", "experiment/evaluation/scratch.py",
      "return cls(train.contiguous(), test.contiguous())",
      "return cls(train.contiguous(), train[:, -5:].contiguous())", SCRATCH,
      "Scratch's held-out images = the last five training images",
      ("experiment/evaluation/scratch.py", "images[:, TRAIN_DRAWERS:].contiguous())",
       "images[:, TRAIN_DRAWERS - 5:TRAIN_DRAWERS].contiguous())")),
    m("iid-unshuffled", "experiment/evaluation/omniglot.py",
      "rng.permutation(base) if iid else base", "base if iid else base", PROTOCOLS,
      "the Oracle's --iid order left class-sorted (the issue's survivor)"),
    m("runs-with-replacement", "experiment/evaluation/omniglot.py", "rng.choice(n_pool, size=n, replace=False)",
      "rng.choice(n_pool, size=n, replace=True)", PROTOCOLS, "a run's classes drawn with replacement"),
    m("reset-last-keeps-output", "experiment/evaluation/online_learner.py",
      'elif self.reset in ("all", "zero") or i == len(self.layers) - 1:',
      'elif self.reset in ("all", "zero") or i == 0:', PROTOCOLS,
      "the 2019 reset re-initialises the hidden layer and keeps the output layer",
      ("experiment/evaluation/omniglot.py", 'elif self.reset in ("all", "zero") or i == len(self.layers) - 1:',
       'elif self.reset in ("all", "zero") or i == 0:')),
    m("run-labels-tiled", "experiment/evaluation/online_learner.py", "np.repeat(spec.classes, TRAIN_DRAWERS)",
      "np.tile(spec.classes, TRAIN_DRAWERS)", PROTOCOLS, "trajectory labels out of step with the images",
      ("experiment/evaluation/omniglot.py", "np.repeat(spec.classes, TRAIN_DRAWERS)",
       "np.tile(spec.classes, TRAIN_DRAWERS)")),
    m("held-out-scored-on-train", "experiment/evaluation/omniglot.py",
      "learner.held_out_accuracy(bank.test, specs, finals)", "learner.held_out_accuracy(bank.train, specs, finals)",
      PROTOCOLS, "held-out accuracy scored on the training features"),
    m("search-on-eval-runs", "experiment/evaluation/omniglot.py", 'run_specs(p.seed, "lr_search", n,',
      'run_specs(p.seed, "eval", n,', PROTOCOLS, "the rate searched on the reported runs' classes"),
    m("choose-lr-argmin", "experiment/evaluation/rate_search.py", "best = [grid[int(np.argmax(row))]",
      "best = [grid[int(np.argmin(row))]", PROTOCOLS + SINE, "the worst rate of each search run"),
    m("choose-lr-tie-larger", "experiment/evaluation/rate_search.py", "key=lambda lr: (mean[lr], -lr))",
      "key=lambda lr: (mean[lr], lr))", PROTOCOLS + SINE, "frequency-and-mean ties go to the larger rate"),
    m("scratch-bias-init", "experiment/evaluation/scratch.py",
      "params += [kaiming_normal(layer.weight.shape, gen), torch.zeros(layer.bias.shape)]",
      "params += [kaiming_normal(layer.weight.shape, gen), torch.ones(layer.bias.shape)]", SCRATCH,
      "Scratch's biases start at one"),
    m("scratch-batch-two", "experiment/evaluation/scratch.py",
      "loss = F.cross_entropy(self.net(x[t:t + 1]), y[t:t + 1])",
      "loss = F.cross_entropy(self.net(x[t:t + 2]), y[t:t + 2])", SCRATCH, "Scratch learns batches of two"),
    # --- Table 2: experiment/evaluation/table2.py ------------------------------------------------------
    m("table2-window-shift", "experiment/evaluation/table2.py",
      "return [(end, order[end - task_length:end]) for end in",
      "return [(end, order[end + 1 - task_length:end + 1]) for end in", TABLE2 + LEARNERS,
      "EWC's task window shifted by one (the issue's survivor)",
      ("experiment/evaluation/table2.py", "rows = torch.as_tensor(run.order[t + 1 - run.task_length:t + 1])",
       "rows = torch.as_tensor(run.order[t + 2 - run.task_length:t + 2])")),
    m("table2-boundary-early", "experiment/evaluation/table2.py",
      "range(task_length, len(order), task_length)]", "range(task_length - 1, len(order), task_length)]",
      TABLE2 + LEARNERS, "the task boundary one sample early",
      ("experiment/evaluation/table2.py", "if (t + 1) % run.task_length == 0 and t + 1 < n:",
       "if t % run.task_length == 0 and t + 1 < n:")),
    m("table2-boundary-after-last", "experiment/evaluation/table2.py",
      "range(task_length, len(order), task_length)]", "range(task_length, len(order) + 1, task_length)]",
      TABLE2, "a penalty after the last task too",
      ("experiment/evaluation/table2.py", "and t + 1 < n:", "and t + 1 <= n:")),
    m("table2-tasks-unshifted", "experiment/evaluation/table2.py",
      "[t * task_length + rng.permutation(task_length) for t in range(tasks)]",
      "[rng.permutation(task_length) for t in range(tasks)]", TABLE2, "every task replays the first task's images"),
    m("table2-held-out-on-train", "experiment/evaluation/table2.py",
      "test_acc = [accuracy(rep, p, bank.test, r.classes)", "test_acc = [accuracy(rep, p, bank.train, r.classes)",
      TABLE2, "Table 2's held-out accuracy scored on training images"),
    m("table2-search-on-eval", "experiment/evaluation/table2.py", 'runs = task_runs(protocol.seed, "lr_search",',
      'runs = task_runs(protocol.seed, "eval",', TABLE2, "Table 2's search on the reported runs"),
    m("table2-iid-not-shuffled", "experiment/evaluation/table2.py",
      'runs = task_runs(protocol.seed, "eval", *setting, protocol.runs, bank.n_classes, learner == "iid")',
      'runs = task_runs(protocol.seed, "eval", *setting, protocol.runs, bank.n_classes, False)', TABLE2,
      "Approx IID reported on the task-ordered stream"),
    m("table2-labels-tiled", "experiment/evaluation/table2.py", "return x, torch.as_tensor(np.repeat(classes, "
      "bank.shape[1]))", "return x, torch.as_tensor(np.tile(classes, bank.shape[1]))", TABLE2,
      "Table 2's feature labels out of step with the features"),
    # --- training: experiment/training/omniglot.py ------------------------------------------------------
    m("training-reset-inverted", "experiment/training/omniglot.py", "        if self.cfg.reset:",
      "        if not self.cfg.reset:", TRAINING, "the trajectory classes' output rows reset when told not to"),
    m("training-srnn-sign", "experiment/training/omniglot.py", "loss = ce + cfg.srnn_weight * sparsity",
      "loss = ce - cfg.srnn_weight * sparsity", TRAINING, "SR-NN rewards density"),
    m("training-metric-parts-swapped", "experiment/training/omniglot.py",
      'metrics["accuracy_after_trajectory_classes"] = correct_after[n_random:].mean().item()',
      'metrics["accuracy_after_trajectory_classes"] = correct_after[:n_random].mean().item()', TRAINING + FACTS,
      "the learning-vs-remembering diagnostic reads the wrong part of the meta set"),
]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=True)
    parser.add_argument("--rev", default="HEAD", help="the commit to probe (default HEAD; uncommitted edits are not seen)")
    parser.add_argument("--only", nargs="+", default=None, help="mutant names (default: all)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per mutant's test run (a timeout kills it)")
    parser.add_argument("--out", type=Path, default=None, help="write the outcome of every mutant here (JSON)")
    parser.add_argument("--keep", action="store_true", help="keep the exported copy (its path is printed)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    return parser


def export(rev: str, dest: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def pick_site(copy: Path, mutant: Mutant):
    for path, old, new in mutant.sites:
        file = copy / path
        if file.is_file() and file.read_text().count(old) == 1:
            return file, old, new
    return None


def pytest(copy: Path, args, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "OML_CACHE_DIR": str(copy / ".oml_cache"), "NUMBA_CACHE_DIR": str(copy / ".numba_cache")}
    return subprocess.run(["nice", "-n", "10", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)


def run_tests(copy: Path, tests, timeout: int, deselect=()) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        done = pytest(copy, ["-x", *tests, *(f"--deselect={node}" for node in deselect)], timeout)
        outcome = "survived" if done.returncode == 0 else "killed"
    except subprocess.TimeoutExpired:
        outcome = "killed (timeout)"
    return outcome, round(time.perf_counter() - start, 1)


def failing_before(copy: Path, targets, timeout: int) -> list[str]:
    """Node ids of the target tests that fail with no mutant (they are left out of every mutant's
    run, and reported); stops the probe when a file cannot even be collected."""
    done = pytest(copy, ["-rfE", *targets], timeout)
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR ")]
    if errors or done.returncode not in (0, 1):
        sys.exit(f"error: the target tests do not run without any mutant: {errors or done.stdout[-2000:]}")
    return [line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")]


def main(args) -> dict:
    mutants = [mu for mu in MUTANTS if args.only is None or mu.name in args.only]
    if args.list:
        for mu in mutants:
            print(f"{mu.name:34s} {mu.sites[0][0]:38s} {mu.what}")
        return {}
    unknown = set(args.only or ()) - {mu.name for mu in MUTANTS}
    if unknown:
        sys.exit(f"error: unknown mutant(s) {', '.join(sorted(unknown))} (see --list)")
    copy = Path(tempfile.mkdtemp(prefix="mutation_probe_"))
    export(args.rev, copy)
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.rev], check=True, capture_output=True,
                         text=True).stdout.strip()
    print(f"probing {sha[:10]} in {copy}", flush=True)
    targets = sorted({t for mu in mutants for t in mu.tests if (copy / t).is_file()})
    start = time.perf_counter()
    broken = failing_before(copy, targets, args.timeout * 4)
    print(f"unmutated: {len(targets)} test files run ({time.perf_counter() - start:.1f} s); "
          f"{len(broken)} tests fail without a mutant and are left out: {', '.join(broken) or 'none'}", flush=True)
    results = []
    for mu in mutants:
        site = pick_site(copy, mu)
        tests = [t for t in mu.tests if (copy / t).is_file()]
        if site is None:
            results.append({"name": mu.name, "outcome": "n/a", "seconds": 0.0, "what": mu.what})
        else:
            file, old, new = site
            original = file.read_text()
            file.write_text(original.replace(old, new))
            try:
                outcome, seconds = run_tests(copy, tests, args.timeout, broken)
            finally:
                file.write_text(original)
            results.append({"name": mu.name, "file": str(file.relative_to(copy)), "outcome": outcome,
                            "seconds": seconds, "tests": tests, "what": mu.what})
        r = results[-1]
        print(f"{r['outcome']:17s} {r['seconds']:6.1f} s  {mu.name}: {mu.what}", flush=True)
    applied = [r for r in results if r["outcome"] != "n/a"]
    killed = [r for r in applied if r["outcome"].startswith("killed")]
    summary = {"rev": sha, "date": time.strftime("%Y-%m-%d", time.gmtime()), "failing_unmutated": broken,
               "mutants": len(results),
               "applied": len(applied), "killed": len(killed),
               "survived": [r["name"] for r in applied if r["outcome"] == "survived"],
               "not_applicable": [r["name"] for r in results if r["outcome"] == "n/a"],
               "seconds": round(sum(r["seconds"] for r in results), 1), "results": results}
    print(f"killed {len(killed)} of {len(applied)} applied mutants ({len(results) - len(applied)} n/a); "
          f"survivors: {', '.join(summary['survived']) or 'none'}")
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    if args.keep:
        print(f"kept {copy}")
    else:
        subprocess.run(["rm", "-rf", str(copy)], check=False)
    return summary


if __name__ == "__main__":
    main(get_args_parser().parse_args())
