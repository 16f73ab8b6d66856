"""Choose one candidate (SR-NN at three sparsity targets, pretraining at three RLN/PLN splits, a
preset at three rates) from evaluations on the meta-validation split alone.

    python -m experiment.evaluation.select RUN_A RUN_B RUN_C [--labels A B C]
    python -m experiment.evaluation.select A_S1 A_S2 B_S1 B_S2 --labels A A B B   # two seeds each

Every results file must come from the meta-validation split (`evaluate_regression.py
--selection-functions`, `evaluate_omniglot.py --selection-classes`): a candidate is never chosen
on the functions or classes that are reported (docs/protocols.md). The score is the evaluation's
own measure there:
- sine: the MSE after learning all functions, mean over runs (lower wins);
- Omniglot: the held-out accuracy, mean over runs and over the class counts every candidate has
  (higher wins).
Results given the same label are the meta-training seeds of one candidate: its score is the mean
of theirs, so a candidate is chosen for its recipe, not for one lucky seed.
"""
import argparse

import numpy as np

from utils.cli import run_main
from utils.errors import UserError
from utils.results import read_results


def _check_split(result: dict) -> None:
    if result.get("split") != "selection":
        flag = "--selection-functions" if result.get("benchmark") == "sine" else "--selection-classes"
        raise UserError(f"'{result.get('label')}' was evaluated on the {result.get('split', 'test')} split; candidates are "
                        f"compared on the meta-validation split only: evaluate them with {flag}")


def validation_score(result: dict, class_counts=None) -> tuple[float, bool]:
    """(score, higher_is_better) of one meta-validation results.json; Omniglot: over `class_counts` (default all)."""
    _check_split(result)
    if result.get("benchmark") == "sine":
        return float(result["final_mse"]["mean"]), False
    counts = result["by_classes"] if class_counts is None else class_counts
    return float(np.mean([result["by_classes"][str(n)]["held_out_accuracy"]["mean"] for n in counts])), True


def common_class_counts(results: list[dict]):
    """Omniglot candidates are compared on the class counts they all have (None for sine)."""
    if any(r.get("benchmark") == "sine" for r in results):
        return None
    common = set.intersection(*(set(r["by_classes"]) for r in results))
    if not common:
        raise UserError("the candidates share no class count")
    return sorted(common, key=int)


def candidate_scores(results: list[dict], labels: list[str]) -> tuple[dict, bool]:
    """({label: (mean score over its results, how many)}, higher_is_better), labels in first-seen order."""
    if len({r.get("benchmark") for r in results}) != 1:
        raise UserError("candidates must all come from the same benchmark")
    for result in results:
        _check_split(result)
    counts = common_class_counts(results)
    scored = [validation_score(r, counts) for r in results]
    per_label = {}
    for label, (score, _) in zip(labels, scored):
        per_label.setdefault(label, []).append(score)
    return {label: (float(np.mean(s)), len(s)) for label, s in per_label.items()}, scored[0][1]


def best_label(scores: dict, higher: bool) -> str:
    """The best of candidate_scores' labels; a tie goes to the first listed."""
    values = [s for s, _ in scores.values()]
    return list(scores)[int(np.argmax(values) if higher else np.argmin(values))]


def select(results: list[dict], labels: list[str] | None = None) -> str:
    """The label of the best candidate; a tie goes to the first listed."""
    return best_label(*candidate_scores(results, labels or [str(i) for i in range(len(results))]))


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="evaluation run folders or results.json files")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one per result; a label given several times: that candidate's meta-training seeds")
    return parser


def main(args):
    results = [read_results(p) for p in args.results]
    labels = args.labels or args.results
    if len(labels) != len(results):
        raise UserError(f"{len(labels)} labels for {len(results)} results")
    try:
        scores, higher = candidate_scores(results, labels)
    except (KeyError, TypeError, ValueError, IndexError) as err:  # a results file missing what is scored
        raise UserError(f"a results file lacks what is scored ({type(err).__name__}: {err}); "
                        "give results.json files written by evaluate_regression.py or evaluate_omniglot.py") from None
    best = best_label(scores, higher)
    counts = common_class_counts(results)
    if counts is not None:
        print(f"compared on class counts {', '.join(counts)}")
    kind = "held-out accuracy" if higher else "MSE after all functions"
    for label, (score, n) in scores.items():
        print(f"{'*' if label == best else ' '} {label}: meta-validation {kind} {score:.4f} ({n} result{'s' * (n > 1)})")
    print(f"chosen: {best}")
    return best


if __name__ == "__main__":
    run_main(main, get_args_parser())
