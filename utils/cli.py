"""Flags shared by the scripts, and the wrapper that turns a UserError into one line + exit 2."""
import argparse
import errno
import sys

from utils.errors import UserError

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
SWEEP_HELP = "; one or more values: a sweep, see --rank"


class OneOrMore(argparse.Action):
    """nargs="+" stored as the value when one is given (exactly what a single-valued flag stores)
    and as a list when several are: a list in the namespace is a sweep (experiment/grid.py)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values[0] if len(values) == 1 else list(values))


def one_or_more(help: str) -> dict:
    """add_argument keywords for a flag that may take several values (a sweep)."""
    return {"nargs": "+", "action": OneOrMore, "help": help + SWEEP_HELP}


def add_common(parser: argparse.ArgumentParser, *, training: bool, sweep: bool = False) -> None:
    """The flags every script takes. A training script's --preset, --seed and --steps are fields
    of its config (experiment.config.add_flags derives them); an evaluation script takes --preset
    (the network to build without a checkpoint) and --seed (the evaluation's) here; with
    sweep=True its --seed may take several values."""
    if not training:
        parser.add_argument("--preset", default=None, help="named configuration; flags override it")
        seed_help = "the one seed of the torch RNG and every numpy stream"
        parser.add_argument("--seed", type=int, default=None, **(one_or_more(seed_help) if sweep else {"help": seed_help}))
    parser.add_argument("--name", default=None, help="run name (folder <results-dir>/<date>/<dataset>/<name>_<n>)")
    parser.add_argument("--results-dir", "--results_dir", dest="results_dir", default="../results",
                        help="root of the dated run folders (default: ../results, as the original)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--tf32", action="store_true",
                        help="on CUDA: TF32 matmuls and convolutions and cuDNN autotuning (faster; ~1e-3 from "
                             "the float32 numbers, reruns may differ in the last digits); default: float32 with "
                             "deterministic cuDNN (utils/device.py)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (it is off anyway when output is not a terminal)")
    if training:
        parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                            help="continue a killed run from its folder (or its checkpoint.pt)")
        parser.add_argument("--save-every", dest="save_every", type=int, default=None,
                            help="checkpoint interval in steps, a multiple of --log-every (default 1000, or the "
                                 "largest multiple of --log-every below it; a resumed run keeps its own)")
        parser.add_argument("--log-every", dest="log_every", type=int, default=None,
                            help="metrics interval in steps (default 50; a resumed run keeps its own)")


def refuse_flag(parser: argparse.ArgumentParser, flags: tuple, why: str) -> None:
    """Each of `flags` (with or without a value) stops the parse with '<flag> <why>': a spelling
    that would mean something else here than a user of the original expects is refused, not
    silently reread (nor taken as an abbreviation of a longer flag)."""
    class Refuse(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"{option_string} {why}")
    parser.add_argument(*flags, nargs="?", action=Refuse, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_nonstandard_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nonstandard-data", "--nonstandard_data", dest="nonstandard_data", action="store_true",
                        help="accept an Omniglot tree whose class counts differ from the official release "
                             "(964 background, 659 evaluation classes); by default that is an error")


def explicit_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """{dest: (flag, value)} of the flags given on the command line. A flag whose default is
    argparse.SUPPRESS (a config's, experiment.config.add_flags) is given when it is present at all;
    any other when its value is not the parser's default (a flag given with its default value is
    indistinguishable, and harmless). The flag named is the first spelling of the option that
    sets that value (--second-order for first_order False)."""
    return {dest: (_spelling(parser, dest, value), value) for dest, value in vars(args).items()
            if value != parser.get_default(dest)}


def _spelling(parser: argparse.ArgumentParser, dest: str, value) -> str:
    options = [a for a in parser._actions if a.dest == dest and a.option_strings]
    if not options:
        return dest
    chosen = [a for a in options if a.const is not None and a.const == value]
    return (chosen or options)[0].option_strings[0]


def _usage_error(message: str):
    """argparse's refusals (a bad choice, a value that is not a number, two exclusive flags) as
    the one `error:` line every other refusal is, instead of the usage text and a second line."""
    raise UserError(f"{message} (see --help)")


def run_main(main, parser: argparse.ArgumentParser, argv=None):
    parser.error = _usage_error
    try:
        return main(parser.parse_args(argv))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        # A disk that fills up or turns read-only mid-run (the folders are checked before work
        # starts) is the user's to fix, not a bug: one line. Any other OSError stays a traceback.
        if err.errno not in WRITE_ERRNOS:
            raise
        where = f": '{err.filename}'" if err.filename else ""
        print(f"error: {err.strerror}{where}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        # Only the training loop knows whether a checkpoint exists; it raises Interrupted saying so.
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        sys.exit(130)
