"""Every command in the README and docs/*.md must stay true: each script exists, each command line parses with
that script's own parser, and each shipped file it names exists. (Other tests run the commands
themselves on tiny settings; this one catches a renamed flag or a moved file.)"""
import importlib
import re
import shlex

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()
DOCS = [README] + [page.read_text() for page in sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [block for text in DOCS for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S)]


def _commands():
    """`python SCRIPT.py ...` and `python -m package.module ...` lines, with continuations joined."""
    found = []
    for block in BLOCKS:
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part.split(" #")[0].strip()) if part.strip() else []
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words = words[1:]  # environment assignments such as OMP_NUM_THREADS=1
                if len(words) >= 2 and words[0] == "python":
                    found.append(words[1:])
    return found


COMMANDS = _commands()


def test_the_quick_start_has_exactly_two_commands():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", quick, flags=re.S) for line in block.strip().splitlines()]
    assert len(lines) == 2, lines
    assert "oml_regression.py" in lines[0] and "pytest" in lines[1]


def test_the_readme_names_commands_for_every_script():
    scripts = {words[0] for words in COMMANDS if words[0].endswith(".py")}
    for script in ("oml_regression.py", "evaluate_regression.py", "oml_omniglot.py", "evaluate_omniglot.py",
                   "visualize_representations.py", "plot_results.py"):
        assert script in scripts, script


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w)[:70] for w in COMMANDS])
def test_each_command_parses(words):
    if words[0] == "-m":
        if words[1] == "pytest":
            return
        module, argv = importlib.import_module(words[1]), words[2:]
    elif words[0].startswith("benchmarks/"):
        assert (REPO / words[0]).is_file(), words[0]
        return
    else:
        assert (REPO / words[0]).is_file(), f"README names {words[0]}, which does not exist"
        module, argv = importlib.import_module(words[0].removesuffix(".py")), words[1:]
    module.get_args_parser().parse_args(argv)  # argparse exits (SystemExit) on an unknown flag
    for word in argv:
        if word.startswith("trained_models/"):
            assert (REPO / word).exists(), f"README names {word}, which is not shipped"


def test_the_baseline_script_commands_parse():
    import subprocess
    listed = subprocess.run(["bash", str(REPO / "scripts" / "train_baselines.sh"), "--list"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    assert len(listed) == 16
    for line in listed:
        words = shlex.split(line)
        assert words[0] == "python"
        importlib.import_module(words[1].removesuffix(".py")).get_args_parser().parse_args(words[2:])
