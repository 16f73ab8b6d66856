import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_OMNIGLOT = REPO.parent / "shared" / "omniglot"


def one_line_error(capsys, main, parser, argv) -> str:
    """Run a script's main through utils.cli.run_main and return its error line, checking that it
    exited with status 2 and printed exactly one `error: ...` line."""
    import pytest

    from utils.cli import run_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_main(main, parser, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err
