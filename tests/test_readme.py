"""Everything the README and docs/*.md say about the repository must stay true: each command's
script exists and its command line parses with that script's own parser, each shipped file it
names exists, and every repository path and link they mention exists. The README stays short
(under 250 lines) and docs/README.md indexes every page. (Other tests run the commands themselves
on tiny settings; this one catches a renamed flag, a moved file or a stale page. The file-by-file
table, docs/layout.md, is kept true by tests/test_layout.py.)"""
import importlib
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
PAGES = {page: page.read_text() for page in [README, *sorted((REPO / "docs").glob("*.md"))]}
README_TEXT = PAGES[README]
SOURCE_SUFFIXES = (".py", ".c", ".sh")
README_MAX_LINES = 250  # a newcomer reads it in five minutes; the rest lives in docs/


def _fenced_blocks(text):
    """(language, body) of each fenced code block, read line by line so that a block with any
    language tag (```text) closes where it should."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```\s*([\w+-]*)\s*$", line)
        if language is None and fence:
            language, body = fence.group(1), []
        elif language is not None and re.match(r"^\s*```\s*$", line):
            blocks.append((language, "\n".join(body)))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def _commands():
    """(page, words) of every `python SCRIPT.py ...` and `python -m package.module ...` line in a
    bash, sh or untagged block, with continuations joined."""
    found = []
    for page, text in PAGES.items():
        for language, block in _fenced_blocks(text):
            if language not in ("", "bash", "sh", "shell"):
                continue
            for line in block.replace("\\\n", " ").splitlines():
                if line.lstrip().startswith("#"):
                    continue  # a comment line, which may hold an apostrophe shlex cannot split
                for part in line.split("&&"):
                    words = shlex.split(part.split(" #")[0].strip()) if part.strip() else []
                    while words and "=" in words[0] and not words[0].startswith("-"):
                        words = words[1:]  # environment assignments such as OMP_NUM_THREADS=1
                    if len(words) >= 2 and words[0] == "python":
                        found.append((page, words[1:]))
    return found


COMMANDS = _commands()


def _section(text, heading):
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_quick_start_has_exactly_two_commands():
    quick = _section(README_TEXT, "Quick start")
    lines = [line for _, block in _fenced_blocks(quick) for line in block.strip().splitlines()]
    assert len(lines) == 2, lines
    assert "oml_regression.py" in lines[0] and "pytest" in lines[1]


@pytest.mark.parametrize("page", [README, REPO / "docs" / "usage.md"], ids=["README.md", "docs/usage.md"])
def test_the_page_names_commands_for_every_script(page):
    scripts = {words[0] for where, words in COMMANDS if where == page and words[0].endswith(".py")}
    for script in ("oml_regression.py", "evaluate_regression.py", "oml_omniglot.py", "evaluate_omniglot.py",
                   "visualize_representations.py", "plot_results.py"):
        assert script in scripts, f"{page.name} gives no command for {script}"


def test_the_docs_pages_commands_are_checked_too():
    pages = {page.name for page, _ in COMMANDS}
    for name in ("README.md", "usage.md", "sweeps.md", "results.md", "baselines.md", "benchmarks.md"):
        assert name in pages, f"no command of {name} is checked"


def test_the_sweep_examples_are_checked():
    """docs/sweeps.md's examples (local, SLURM, dry run, evaluation, aggregate, --rank) all parse."""
    swept = [words for page, words in COMMANDS if page.name == "sweeps.md"]
    assert sum(words[:2] == ["-m", "experiment.sweep"] for words in swept) >= 5
    assert any("--executor" in words and "slurm" in words for words in swept)
    assert any("--rank" in words for words in swept)


# --- The README stays short; docs/README.md indexes the docs ----------------------------------

def test_the_readme_is_short():
    lines = README_TEXT.count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (docs/README.md)"


def test_the_readme_keeps_its_sections_in_order():
    headings = re.findall(r"^## (.+)$", README_TEXT, flags=re.M)
    wanted = ["Quick start", "Headline results", "Evaluate a shipped model", "Run the paper's experiments",
              "Where things are"]
    found = [heading for heading in headings if heading in wanted]
    assert found == wanted, headings


def test_the_docs_index_lists_every_page():
    index = REPO / "docs" / "README.md"
    listed = {target.split("#")[0] for target in LINK.findall(PAGES[index])}
    pages = {page.name for page in (REPO / "docs").glob("*.md") if page != index}
    missing = sorted(pages - listed)
    assert not missing, f"docs/README.md does not list {missing}"
    assert "docs/README.md" in README_TEXT and "docs/layout.md" in README_TEXT


@pytest.mark.parametrize("page,words", COMMANDS, ids=[f"{p.name}: {' '.join(w)}"[:80] for p, w in COMMANDS])
def test_each_command_parses(page, words):
    if words[0] == "-m":
        if words[1] == "pytest":
            return
        module, argv = importlib.import_module(words[1]), words[2:]
        if words[1] == "experiment.sweep":  # its own flags, then the swept script's (lists allowed)
            sweep_args, argv = module.get_args_parser().parse_known_args(argv)
            module = importlib.import_module(sweep_args.script.removesuffix(".py"))
    elif words[0].startswith("benchmarks/"):
        assert (REPO / words[0]).is_file(), words[0]
        return
    else:
        assert (REPO / words[0]).is_file(), f"{page.name} names {words[0]}, which does not exist"
        module, argv = importlib.import_module(words[0].removesuffix(".py")), words[1:]
    module.get_args_parser().parse_args(argv)  # argparse exits (SystemExit) on an unknown flag
    for word in argv:
        if word.startswith("trained_models/") and not _placeholder(word):
            assert (REPO / word).exists(), f"{page.name} names {word}, which is not shipped"


def test_the_baseline_script_commands_parse():
    import subprocess
    listed = subprocess.run(["bash", str(REPO / "scripts" / "train_baselines.sh"), "--list"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    assert len(listed) == 16
    for line in listed:
        words = shlex.split(line)
        assert words[0] == "python"
        importlib.import_module(words[1].removesuffix(".py")).get_args_parser().parse_args(words[2:])


# --- Paths and links in the prose --------------------------------------------------------------

# A repository path: at least one folder, a file name with one of these endings. Paths that start
# with ../ (results folders, the data) or follow a ':' (commit:path citations of the original
# code) are not this repository's files.
PATH = re.compile(r"(?<![\w./:<>*-])((?:[\w*-]+/)+[\w*.-]+\.(?:py|sh|c|md|png|pt|txt|toml|json))(?![\w/])")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _placeholder(path):
    """trained_models/NAME.pt: a name in capitals (other than README) stands for one the user picks."""
    stem = path.rsplit("/", 1)[-1].split(".")[0]
    return stem.isupper() and stem != "README"


def _strip_urls(text):
    return re.sub(r"https?://\S+", "", text)


# The shipped models' card is checked for paths and links too (its commands sit in table cells).
PROSE = {**PAGES, REPO / "trained_models" / "README.md": (REPO / "trained_models" / "README.md").read_text()}


@pytest.mark.parametrize("page", list(PROSE), ids=[p.relative_to(REPO).as_posix() for p in PROSE])
def test_every_repository_path_a_page_names_exists(page):
    text = _strip_urls(PROSE[page])
    named = {path for path in PATH.findall(text) if not _placeholder(path)}
    absent = sorted(path for path in named if not list(REPO.glob(path)))
    assert not absent, f"{page.name} names {absent}, which do not exist"


def _anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", list(PROSE), ids=[p.relative_to(REPO).as_posix() for p in PROSE])
def test_every_link_a_page_makes_resolves(page):
    broken = []
    for target in LINK.findall(_strip_urls(PROSE[page])):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
            if anchor not in {_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{page.name} links to {broken}, which do not resolve"


def _code_files():
    for path in sorted(REPO.rglob("*")):
        parts = path.relative_to(REPO).parts
        hidden = any(part.startswith(".") or part == "__pycache__" for part in parts)
        if path.suffix in SOURCE_SUFFIXES and path.is_file() and not hidden and path != Path(__file__).resolve():
            yield path  # (this file names the private notes in order to look for them)


def test_code_cites_only_documents_users_have():
    """A docstring or comment that cites a page must cite one in the repository: not a page that
    was never written, nor the project's private notes (../shared/reference/), which users lack."""
    cited, private = set(), []
    for path in _code_files():
        text = path.read_text()
        cited |= {(path.name, page) for page in re.findall(r"(?<![\w/])(docs/[\w.-]+\.md)", text)}
        if "original-code.md" in text or "shared/reference" in text:
            private.append(path.relative_to(REPO).as_posix())
    assert not private, f"{private} cite the project's private reference notes"
    absent = sorted((name, page) for name, page in cited if not (REPO / page).exists())
    assert not absent, f"code cites pages that do not exist: {absent}"
