"""Choose one candidate among evaluations of the same cell (e.g. SR-NN at three sparsity targets,
pretraining at three RLN/PLN splits) from validation scores alone.

    python -m experiment.evaluation.select RUN_A RUN_B RUN_C [--labels A B C]

The score is what the learning-rate search already measured on its own validation trajectories,
at the rate it chose, and never a held-out sample or image:
- sine: the search trajectories' training MSE (mean over search runs; lower wins);
- Omniglot: the search runs' trajectory accuracy, averaged over search runs and class counts
  (higher wins).
Candidates evaluated with a fixed --lr have no search, hence no score, and are refused.
"""
import argparse

import numpy as np

from utils.cli import run_main
from utils.errors import UserError
from utils.results import read_results


def validation_score(result: dict, class_counts=None) -> tuple[float, bool]:
    """(score, higher_is_better) of one results.json; Omniglot: over `class_counts` (default all)."""
    if result.get("benchmark") == "sine":
        search = result["protocol"].get("lr_search")
        if not search:
            raise UserError(f"'{result.get('label')}' was evaluated at a fixed --lr: no validation score to compare")
        return search["mean_scores"][search["grid"].index(search["lr"])], False
    scores = []
    for n, entry in result["by_classes"].items():
        if class_counts is not None and n not in class_counts:
            continue
        search = entry.get("lr_search")
        if not search:
            raise UserError(f"'{result.get('label')}' was evaluated at a fixed --lr: no validation score to compare")
        scores.append(search["mean_scores"][search["grid"].index(search["lr"])])
    return float(np.mean(scores)), True


def common_class_counts(results: list[dict]):
    """Omniglot candidates are compared on the class counts they all have (None for sine)."""
    if any(r.get("benchmark") == "sine" for r in results):
        return None
    common = set.intersection(*(set(r["by_classes"]) for r in results))
    if not common:
        raise UserError("the candidates share no class count")
    return common


def select(results: list[dict]) -> int:
    """Index of the best candidate; a tie goes to the first listed."""
    counts = common_class_counts(results)
    scored = [validation_score(r, counts) for r in results]
    if len({higher for _, higher in scored}) != 1 or len({r.get("benchmark") for r in results}) != 1:
        raise UserError("candidates must all come from the same benchmark")
    values = [s if s is not None else np.inf for s, _ in scored]
    return int(np.argmax(values) if scored[0][1] else np.argmin(values))


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="evaluation run folders or results.json files")
    parser.add_argument("--labels", nargs="+", default=None)
    return parser


def main(args):
    results = [read_results(p) for p in args.results]
    labels = args.labels or args.results
    if len(labels) != len(results):
        raise UserError(f"{len(labels)} labels for {len(results)} results")
    try:
        best = select(results)
    except (KeyError, TypeError, ValueError, IndexError) as err:  # a results file missing the search record
        raise UserError(f"a results file lacks what the rate search records ({type(err).__name__}: {err}); "
                        "give results.json files written by evaluate_regression.py or evaluate_omniglot.py") from None
    counts = common_class_counts(results)
    if counts is not None:
        print(f"compared on class counts {', '.join(sorted(counts, key=int))}")
    for i, (label, result) in enumerate(zip(labels, results)):
        score, higher = validation_score(result, counts)
        kind = "search trajectory accuracy" if higher else "search training MSE"
        print(f"{'*' if i == best else ' '} {label}: {kind} {score:.4f}")
    print(f"chosen: {labels[best]}")
    return best


if __name__ == "__main__":
    run_main(main, get_args_parser())
