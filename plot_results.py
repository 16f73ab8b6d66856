"""Overlay results files in the paper's figure layout (Fig. 3 for sine, Fig. 4 for Omniglot).

    python plot_results.py RUN/results.json OTHER/results.json --labels OML Pretraining --out fig.png
    python plot_results.py OML_RUN PRE_RUN SRNN_RUN RANDOM_RUN ORACLE_RUN \
        --labels OML Pretraining SR-NN "Random RLN" "Oracle (iid x5)" --out fig4.png

    python plot_results.py --tables                  # regenerate README's and docs' tables from summaries/*.json
    python plot_results.py --tables --check          # exit 1, naming the files, if a committed table is stale
    python plot_results.py --table2 TABLE2_RUN ...   # the paper's Table 2 layout (markdown), ours beside the paper's
    python plot_results.py SWEEP_DIR --out fig.png  # a sweep: one line per method, bands across meta-training seeds
    python plot_results.py AGGREGATE_DIR --out fig.png  # several sweeps aggregated as one (experiment.aggregate --out)
    python plot_results.py summaries/omniglot_cpu_wide.json --out fig.png  # a committed Omniglot summary's rows
    python plot_results.py summaries/omniglot_cpu_learners.json --rows "OML (learner=None)" ... --out fig.png
    python plot_results.py --cost-accuracy EVAL_RUN ... --step-seconds 576=0.16 1152=0.39 --out fig.png
                                                    # accuracy at 200 / 600 classes against meta-training minutes
                                                    # (--labels: one series name per file, default its width)

A run folder stands for its results.json (or, while an evaluation is still running, its
results.partial.json: the class counts finished so far). A sweep folder (experiment/sweep.py)
stands for its aggregated groups (experiment/aggregate.py, run first if needed), whose bands are
95% CIs across meta-training seeds; each sweep given is aggregated on its own, so a method whose
seeds lie in two sweeps is plotted from the folder that aggregated them together. A summary file
(summaries/NAME.json, experiment/summaries.py) stands for its rows, or the rows `--rows` names:
their means and 95% intervals across seeds, so a docs figure is redrawn from what the repository
keeps once the run folders are gone. Labels default to each file's or row's label.
"""
import argparse
import sys
from pathlib import Path

from experiment import summaries
from utils import bounds
from utils.cli import run_main
from utils.errors import UserError
from utils.plotting import load_results, plot_loaded, save_formats
from utils.results import read_results


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", help="results.json files (or run folders holding one)")
    parser.add_argument("--tables", action="store_true",
                        help="rewrite every generated table of README.md and docs/*.md from summaries/*.json "
                             "(analysis/tables.py)")
    parser.add_argument("--check", action="store_true", help="with --tables: change nothing; exit 1 if a table is stale")
    parser.add_argument("--labels", nargs="+", default=None)
    parser.add_argument("--rows", nargs="+", default=None, metavar="LABEL",
                        help="with a summary file: draw only these rows (by their label, in this order)")
    parser.add_argument("--out", default="figure.png",
                        help="the figure file (a folder: <folder>/figure.png; no extension: .png is added)")
    parser.add_argument("--title", default=None, help="figure title (Omniglot)")
    parser.add_argument("--table2", action="store_true",
                        help="print Table 2 (evaluate_omniglot.py --learner results) in the paper's layout instead "
                             "of drawing a figure; --out FILE.md also writes it")
    parser.add_argument("--cost-accuracy", action="store_true",
                        help="Omniglot evaluations of networks of several widths and lengths: a table (printed; "
                             "also written beside --out as .md) and a figure of held-out accuracy at 200 and 600 "
                             "classes against meta-training minutes (docs/cpu_wide.md)")
    parser.add_argument("--step-seconds", nargs="+", default=[], metavar="FEATURES=SECONDS",
                        help="with --cost-accuracy: seconds per meta-step of each width (benchmarks/width_cost.py)")
    return parser


def _step_seconds(pairs) -> dict[int, float]:
    out = {}
    for pair in pairs:
        features, _, seconds = pair.partition("=")
        try:
            out[int(features)] = bounds.positive_finite("--step-seconds", float(seconds))
        except ValueError:
            raise UserError(f"--step-seconds takes FEATURES=SECONDS pairs, got {pair!r}") from None
    return out


def cost_accuracy_main(args, paths):
    """The cost-accuracy study's table (markdown, printed) and figure."""
    from utils.plotting import cost_accuracy_points, load_results, plot_cost_accuracy
    try:
        names = [p.parent.name if p.name.startswith("results") else p.stem for p in paths]  # RUN/results.json: RUN
        points = cost_accuracy_points(load_results(paths), names, _step_seconds(args.step_seconds), series=args.labels)
    except (KeyError, ValueError) as err:
        raise UserError(f"cannot build the cost-accuracy table: {err}") from None
    rows = ["| series | evaluation | features | steps | meta-training min | validation 200 / 600 | "
            "held-out 200 (95% CI) | held-out 600 (95% CI) |", "|---|---|---|---|---|---|---|---|"]
    for p in points:
        held = [f"{p[n]['held_out']['mean']:.3f} ({p[n]['held_out']['ci_low']:.3f}-{p[n]['held_out']['ci_high']:.3f})"
                for n in (200, 600)]
        rows.append(f"| {p['series']} | {p['name']} | {p['features']} | {p['steps']:,} | {p['train_minutes']:.0f} | "
                    f"{p[200]['validation']:.3f} / {p[600]['validation']:.3f} | {held[0]} | {held[1]} |")
    table = "\n".join(rows)
    print(table)
    out = figure_path(args.out)
    plot_cost_accuracy(points, out)
    out.with_suffix(".md").write_text(table + "\n")
    print(f"figure: {out}")
    return out


def table2_main(args, paths):
    """Print (and with --out *.md, write) the Table 2 cells of these results files."""
    from experiment.evaluation.table2 import format_table, read_table2
    table = format_table([read_table2(p) for p in paths])
    print(table)
    if args.out != "figure.png":
        out = bounds.output_file("--out", Path(args.out))
        out.write_text(table + "\n")
        print(f"table: {out}")
        return out
    return table


def _results_file(path):
    if not path.is_dir():
        return path
    if not (path / "results.json").is_file() and (path / "results.partial.json").is_file():
        print(f"note: {path} has no results.json yet; plotting its results.partial.json")
        return path / "results.partial.json"
    return path / "results.json"


def figure_path(out) -> Path:
    """Where the figure really goes: matplotlib writes 'fig' as fig.png and a folder not at all."""
    out = Path(out)
    if out.is_dir():
        out = out / "figure.png"
    elif not out.suffix:
        out = out.with_name(out.name + ".png")
    formats = save_formats()
    if out.suffix[1:].lower() not in formats:
        raise UserError(f"--out '{out}': matplotlib cannot write {out.suffix!r} files (use one of "
                        f"{', '.join('.' + f for f in sorted(formats))})")
    return bounds.output_file("--out", out)


def _expand_sweeps(given) -> list[Path]:
    """Each sweep folder (it holds sweep.json) replaced by its aggregated results files, and each
    aggregate folder (experiment.aggregate --out) by the group files its summary.json lists."""
    paths = []
    for path in map(Path, given):
        if path.is_dir() and (path / "sweep.json").is_file():
            from experiment.aggregate import group_files
            paths += group_files(path)
        elif path.is_dir() and (path / "summary.json").is_file():
            from experiment.aggregate import listed_group_files
            paths += listed_group_files(path)
        else:
            paths.append(path)
    return paths


def tables_main(args):
    from analysis.tables import stale_files
    repo = Path(__file__).resolve().parent
    stale = stale_files(repo)
    for path, text in stale.items():
        if args.check:
            print(f"stale: {path.relative_to(repo)}")
        else:
            path.write_text(text)
            print(f"rewrote the tables of {path.relative_to(repo)}")
    if not stale:
        print("every table equals what summaries/ gives")
    if stale and args.check:
        sys.exit(1)
    return 0


def main(args):
    if args.tables:
        if args.results:
            raise UserError("--tables reads summaries/*.json and takes no results files")
        return tables_main(args)
    if args.check:
        raise UserError("--check goes with --tables")
    if not args.results:
        raise UserError("give results files, run folders or sweep folders to plot (or --tables)")
    given_summaries = {p: s for p in args.results if (s := summaries.read_if_summary(p)) is not None}
    if args.rows and not given_summaries:
        raise UserError("--rows picks rows of a summary file (summaries/NAME.json): none was given")
    if given_summaries and (args.table2 or args.cost_accuracy):
        raise UserError("--table2 and --cost-accuracy read results files; a summary keeps only each row's means")
    entries = _figure_entries(args.results, given_summaries, args.rows)
    paths = [e for e in entries if isinstance(e, Path)]
    for path in paths:
        if not path.is_file():
            raise UserError(f"no results file at '{path}'")
    if args.labels and len(args.labels) != len(entries):
        raise UserError(f"{len(args.labels)} labels for {len(entries)} results files and summary rows")
    if args.table2:
        return table2_main(args, paths)
    if args.cost_accuracy:
        return cost_accuracy_main(args, paths)
    out = figure_path(args.out)
    for path in paths:
        read_results(path)  # a list or a number is not a results file: refuse before plotting
    results = [e if isinstance(e, dict) else load_results([e])[0] for e in entries]
    labels = args.labels or [r.get("label", e.parent.name if isinstance(e, Path) else "") for r, e in zip(results, entries)]
    try:
        out = plot_loaded(results, labels, out, args.title)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise UserError(f"cannot plot these files: {type(err).__name__}: {err}") from None
    print(f"figure: {out}")
    return out


def _figure_entries(given, given_summaries: dict, rows) -> list:
    """In the order given: results files (Paths; a run, sweep or aggregate folder expanded) and each
    summary's rows (results dicts), only those `rows` names when it is given (every name must match one
    row of the summaries given, and each is drawn in `rows`' order)."""
    entries, found = [], {}
    for item in given:
        if item not in given_summaries:
            entries += [_results_file(p) for p in _expand_sweeps([item])]
            continue
        drawn = summaries.figure_results(given_summaries[item], item)
        if rows is not None:
            for result in drawn:
                if result["label"] in rows:
                    if result["label"] in found:
                        raise UserError(f"--rows: two summaries given have a row '{result['label']}'")
                    found[result["label"]] = item
            drawn = sorted((r for r in drawn if r["label"] in rows), key=lambda r: rows.index(r["label"]))
        entries += drawn
    missing = [label for label in rows or [] if label not in found]
    if missing:
        raise UserError(f"--rows: no row labelled {missing} in {' '.join(map(str, given))}")
    return entries



if __name__ == "__main__":
    run_main(main, get_args_parser())
