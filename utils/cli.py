"""Flags shared by the scripts, and the wrapper that turns a UserError into one line + exit 2."""
import argparse
import errno
import sys

from utils.errors import UserError

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def add_common(parser: argparse.ArgumentParser, *, training: bool) -> None:
    parser.add_argument("--preset", default=None, help="named configuration; flags override it")
    parser.add_argument("--seed", type=int, default=None, help="the one seed for torch, random and numpy streams")
    parser.add_argument("--name", default=None, help="run name (folder <results-dir>/<date>/<dataset>/<name>_<n>)")
    parser.add_argument("--results-dir", "--results_dir", dest="results_dir", default="../results",
                        help="root of the dated run folders (default: ../results, as the original)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar (it is off anyway when output is not a terminal)")
    if training:
        parser.add_argument("--steps", "--epoch", "--epochs_meta", dest="steps", type=int, default=None,
                            help="meta-training steps (the original's --epoch is accepted)")
        parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                            help="continue a killed run from its folder (or its checkpoint.pt)")
        parser.add_argument("--save-every", dest="save_every", type=int, default=None,
                            help="checkpoint interval in steps (default 1000; a resumed run keeps its own)")
        parser.add_argument("--log-every", dest="log_every", type=int, default=None,
                            help="metrics interval in steps (default 50; a resumed run keeps its own)")


def add_meta_learning(parser: argparse.ArgumentParser, *, step_help: str, tasks_help: str) -> None:
    """The method and update-rule flags both meta-training scripts take, with the original's spellings."""
    parser.add_argument("--method", default=None, choices=["oml", "pretraining", "srnn"])
    parser.add_argument("--update_lr", "--update-lr", dest="update_lr", type=float, default=None, help="inner SGD step")
    parser.add_argument("--meta_lr", "--meta-lr", dest="meta_lr", type=float, default=None, help="Adam step of the outer loop")
    parser.add_argument("--update_step", "--update-step", dest="update_step", type=int, default=None, help=step_help)
    parser.add_argument("--tasks", type=int, default=None, help=tasks_help)
    order = parser.add_mutually_exclusive_group()  # together, the last one silently won
    order.add_argument("--first-order", dest="first_order", action="store_const", const=True, default=None,
                       help="detach the inner gradients (the pre-2020 meta-gradient)")
    order.add_argument("--second-order", dest="first_order", action="store_const", const=False)


def add_nonstandard_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nonstandard-data", "--nonstandard_data", dest="nonstandard_data", action="store_true",
                        help="accept an Omniglot tree whose class counts differ from the official release "
                             "(964 background, 659 evaluation classes); by default that is an error")


def explicit_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """{dest: (flag, value)} of the flags given on the command line, i.e. those whose value is not
    the parser's default (a flag given with its default value is indistinguishable, and harmless)."""
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return {dest: (flags.get(dest, dest), value) for dest, value in vars(args).items()
            if value != parser.get_default(dest)}


def run_main(main, parser: argparse.ArgumentParser, argv=None):
    args = parser.parse_args(argv)
    try:
        return main(args)
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
