"""The packages form layers: a package imports only from the packages below it (and itself).

    utils  <  datasets  <  model  <  experiment  <  analysis  <  the scripts

so a reader can take any package with what lies under it, and `model/` (the maths) never learns
about run folders, data files or the command line.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["utils", "datasets", "model", "experiment", "analysis"]


def imported_packages(path: Path) -> set[str]:
    """Top-level names of the first-party packages a file imports (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_no_package_imports_a_higher_one(package):
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    offenders = {str(path.relative_to(REPO)): sorted(imported_packages(path) - allowed)
                 for path in sorted((REPO / package).rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from experiment.run import Run\n    import analysis.plots\n")
    assert imported_packages(source) == {"experiment", "analysis"}
