"""Reading an evaluation's results.json (or the run folder holding one), with a one-line error."""
import json
from pathlib import Path

from utils.errors import UserError


def read_results(path) -> dict:
    """The results of evaluate_regression.py / evaluate_omniglot.py at `path` (a file or a run folder)."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        result = json.loads(file.read_text())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"no readable results file at '{file}' ({type(err).__name__})") from None
    if not isinstance(result, dict) or result.get("benchmark") not in ("sine", "omniglot"):
        raise UserError(f"'{file}' is not an evaluation results file of evaluate_regression.py or evaluate_omniglot.py "
                        "(a JSON object with \"benchmark\": \"sine\" or \"omniglot\")")
    return renamed_keys(result)


# Omniglot results written before the keys were named after the prose (trajectory / held-out).
OLD_KEYS = {"train_accuracy": "trajectory_accuracy", "test_accuracy": "held_out_accuracy"}


def renamed_keys(result: dict) -> dict:
    """`result` with the old Omniglot accuracy keys under today's names (a no-op on new files)."""
    for entry in result.get("by_classes", {}).values():
        for holder in (entry, entry.get("runs", {})):
            for old, new in OLD_KEYS.items():
                if old in holder and new not in holder:
                    holder[new] = holder.pop(old)
    return result
