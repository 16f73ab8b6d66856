"""The layout holds, and docs/layout.md says what it is.

The packages form layers: a package imports only from the packages below it (and itself).

    utils  <  datasets  <  model  <  experiment  <  analysis  <  the scripts

so a reader can take any package with what lies under it, and `model/` (the maths) never learns
about run folders, data files or the command line.

docs/layout.md lists every file git tracks, one line each (a folder listed whole, such as `tests/`,
stands for its files; a package's empty `__init__.py` goes unlisted, as the page says), a
package's source files always by name, and nothing that does not exist.
"""
import ast
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["utils", "datasets", "model", "experiment", "analysis"]
LAYOUT = REPO / "docs" / "layout.md"
# Folders whose every source file the table lists by name (never as a whole folder).
PACKAGES = (*LAYERS, "benchmarks", "scripts")
SOURCE_SUFFIXES = (".py", ".c", ".sh")


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


# --- docs/layout.md: one line per file, matching the tree --------------------------------------

def layout_entries(text: str) -> list[str]:
    """The first word of each line of the page's one ```text block."""
    blocks = re.findall(r"^```text\n(.*?)^```$", text, flags=re.M | re.S)
    assert len(blocks) == 1, "docs/layout.md should hold one text block, one line per file"
    return [line.split()[0] for line in blocks[0].splitlines() if line.strip()]


def tracked_files() -> set[str]:
    """What git tracks, or (outside a git checkout) every file that is not hidden or a cache."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        return {name for name in listed.decode().split("\0") if name and (REPO / name).exists()}
    except (OSError, subprocess.CalledProcessError):
        return {path.relative_to(REPO).as_posix() for path in REPO.rglob("*") if path.is_file()
                and not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts)}


def unlisted(files: set[str], entries: list[str]) -> list[str]:
    """The files no entry covers: listed by name, or inside a folder listed whole (`tests/`).
    A package's source files must be listed by name, and its empty __init__.py need not be."""
    folders = tuple(entry for entry in entries if entry.endswith("/"))
    missing = []
    for name in sorted(files):
        if name in entries:
            continue
        if name.endswith("__init__.py") and not (REPO / name).read_text().strip():
            continue
        in_package = name.split("/")[0] in PACKAGES and name.endswith(SOURCE_SUFFIXES)
        if not in_package and name.startswith(folders):
            continue
        missing.append(name)
    return missing


def test_the_layout_lists_every_tracked_file():
    entries = layout_entries(LAYOUT.read_text())
    missing = unlisted(tracked_files(), entries)
    assert not missing, f"docs/layout.md does not list {missing}"


def test_every_entry_of_the_layout_exists():
    entries = layout_entries(LAYOUT.read_text())
    assert len(entries) == len(set(entries)), "an entry is listed twice"
    absent = [entry for entry in entries if not (REPO / entry).exists()]
    assert not absent, f"docs/layout.md names {absent}, which do not exist"
    not_folders = [entry for entry in entries if entry.endswith("/") and not (REPO / entry).is_dir()]
    assert not not_folders, not_folders


def test_a_package_is_never_listed_whole():
    entries = layout_entries(LAYOUT.read_text())
    whole = [entry for entry in entries if entry.rstrip("/") in PACKAGES]
    assert not whole, f"docs/layout.md lists {whole} whole; list their files one per line"


def test_the_layout_checker_catches_a_missing_or_covered_file():
    entries = ["README.md", "model/networks.py", "tests/"]
    assert unlisted({"README.md", "model/networks.py", "tests/test_x.py"}, entries) == []
    assert unlisted({"model/new_module.py", "ruff.toml"}, entries) == ["model/new_module.py", "ruff.toml"]
    # a folder listed whole does not cover a package's source file
    assert unlisted({"model/networks.py"}, ["model/"]) == ["model/networks.py"]
