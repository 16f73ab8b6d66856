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
    return result
