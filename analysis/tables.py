"""The README's and docs' result tables, generated from the committed summaries (summaries/*.json).

A table lives in a markdown file between two markers; everything between them is generated:

    <!-- table: sine_quick -->          the headline rows of summaries/sine_quick.json
    <!-- table: sine_quick seeds -->    one row per meta-training seed
    <!-- table: sine_quick candidates -->   the rows without a reading: candidates of a choice
    <!-- table: omniglot_cpu_wide trajectory -->   Omniglot headline rows, trajectory accuracy
    <!-- table: omniglot_cpu_learners learners -->   representation x learner, held-out accuracy
    <!-- table: omniglot_cpu_learners learners_trajectory -->   the same, trajectory accuracy
    <!-- table: omniglot_cpu_table2 table2 -->   the paper's Table 2 layout, the paper's values beside
    <!-- table: omniglot_cpu_table2 table2_seeds -->   its cells per meta-training seed
    <!-- table: NAME table2_reset -->   each column with a Kaiming-normal and a zero output layer, and
                                         zero minus Kaiming paired by checkpoint, with readings
    <!-- table: NAME table2_search -->  the same for each column's own hyperparameter search against its
                                         twin's (--hyperparameters-from)
    ...generated...
    <!-- /table -->

`python plot_results.py --tables` rewrites every such block in README.md and docs/*.md;
tests/test_tables.py fails when a committed block differs from what its summary gives.
"""
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError

BLOCK = re.compile(r"(<!-- table: *([\w.-]+)(?: +(\w+))? *-->\n)(.*?)(<!-- /table -->)", re.S)
KINDS = ("headline", "trajectory", "seeds", "candidates", "learners", "learners_trajectory", "table2", "table2_seeds",
         "table2_reset", "table2_search")
METRIC_TITLES = {"final_mse": "MSE after all functions", "first_mse": "MSE after function 1"}


def markdown_files(repo: Path) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def read_summary(repo: Path, name: str) -> dict:
    path = repo / "summaries" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"table '{name}': cannot read {path} ({type(err).__name__})") from None


# --- numbers ---------------------------------------------------------------------------------------

def _lower_is_better(summary: dict) -> bool:
    return summary["benchmark"] == "sine"


def _number(value: float, summary: dict) -> str:
    return f"{value:.3f}" if summary["benchmark"] == "sine" else f"{value:.3f}".lstrip("0")


def _interval(stats: dict, summary: dict) -> str:
    return f"{_number(stats['ci_low'], summary)}–{_number(stats['ci_high'], summary)}"


def _cell(stats: dict, row: dict, summary: dict) -> str:
    """A mean with its interval across seeds (one seed has none)."""
    if len(row["seeds"]) > 1:
        return f"{_number(stats['mean'], summary)} ({_interval(stats, summary)})"
    return f"{_number(stats['mean'], summary)} (one seed)"


def _title(name: str) -> str:
    if name in METRIC_TITLES:
        return METRIC_TITLES[name]
    kind, n = name.split("@")
    return f"{'held-out' if kind == 'held_out' else 'trajectory'}, {n} classes"


def _columns(summary: dict, kind: str = "held_out") -> list[str]:
    """The metrics shown, in a fixed order (the summary's keys are sorted as text): sine the MSE after
    all functions, then after function 1; Omniglot the held-out (or trajectory) accuracy at each class
    count, ascending."""
    names = list(summary["rows"][0]["metrics"])
    if summary["benchmark"] == "sine":
        return [n for n in METRIC_TITLES if n in names]
    return sorted((n for n in names if n.startswith(f"{kind}@")), key=lambda n: int(n.split("@")[1]))


def _rate(rates: list) -> str:
    def text(rate):  # None: a learner with no rate (the streaming learners)
        return "none" if rate is None else f"{rate:g}"
    shown = []
    for rate in rates:
        shown.append(text(rate) if not isinstance(rate, dict) else "/".join(text(v) for v in rate.values()))
    return ", ".join(dict.fromkeys(shown))


# --- the tables ------------------------------------------------------------------------------------

def headline(summary: dict, with_reading: bool = True, kind: str = "held_out") -> str:
    columns = _columns(summary, kind)
    if not columns:
        raise UserError(f"the summary has no {kind} metric to show")
    primary = columns[0]
    best = (min if _lower_is_better(summary) else max)(summary["rows"], key=lambda r: r["metrics"][primary]["mean"])
    lines = ["| method | seeds | " + " | ".join(f"{_title(c)}: mean (95% CI across seeds)" for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for row in summary["rows"]:
        cells = []
        for c in columns:
            text = _cell(row["metrics"][c], row, summary)
            cells.append(f"**{text}**" if row is best and c == primary and with_reading else text)
        lines.append(f"| {row['label']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    # Omniglot's claims can differ by class count (a tie at 10 classes, a gap at 600), so each
    # count gets its own reading; sine has one headline metric.
    read = [primary] if summary["benchmark"] == "sine" else columns
    return "\n".join(lines + (["", readings(summary, read)] if with_reading else []))


def readings(summary: dict, metrics: list[str], claims=None, about: str = "") -> str:
    """One reading per distinct set of claims: class counts whose claims are the same share one.
    `claims(summary, metric)` words them (default: every pair); `about` names what the rows share."""
    claims = claims or _claims
    by_claims: dict[str, list[str]] = {}
    for metric in metrics:
        by_claims.setdefault(claims(summary, metric), []).append(metric)
    texts = []
    for said, shared in by_claims.items():
        if said.startswith("Fewer than two"):
            texts.append(f"Reading ({about}): {said}" if about else said)
            continue
        if len(shared) == 1:
            title = _title(shared[0])
        else:
            counts = [m.split("@")[1] for m in shared]
            title = f"{_title(shared[0]).split(',')[0]}, {', '.join(counts[:-1])} and {counts[-1]} classes"
        texts.append(f"Reading ({about + '; ' if about else ''}{title}, 95% t intervals across seeds): {said}")
    return " ".join(texts)


def _apart(a: dict, b: dict, lower: bool) -> bool:
    """Whether a's interval across seeds lies on the better side of b's, not touching it."""
    return a["ci_high"] < b["ci_low"] if lower else a["ci_low"] > b["ci_high"]


def _claims(summary: dict, metric: str) -> str:
    """The comparisons the intervals across seeds support at one metric, worded from them alone."""
    rows = [r for r in summary["rows"] if len(r["seeds"]) > 1 and metric in r["metrics"]]
    if len(rows) < 2:
        return "Fewer than two rows with several seeds: no comparison across seeds."
    lower = _lower_is_better(summary)
    rows = sorted(rows, key=lambda r: r["metrics"][metric]["mean"], reverse=not lower)
    apart, overlap = [], []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            separated = _apart(a["metrics"][metric], b["metrics"][metric], lower)
            (apart if separated else overlap).append((a["method"], b["method"]))
    better = "lower" if lower else "higher"
    text = []
    if apart:
        text.append("; ".join(f"{a} {better} than {b}" for a, b in apart) + " (intervals apart)")
    if overlap:
        text.append("; ".join(f"{a} and {b}" for a, b in overlap) + " overlap (no claim)")
    return "; ".join(text) + "."


def seeds(summary: dict) -> str:
    columns = _columns(summary)
    lines = ["| method | seed | " + " | ".join(f"{_title(c)} (95% CI over runs)" for c in columns) + " | runs | online lr |",
             "|---|---|" + "---|" * len(columns) + "---|---|"]
    for row in summary["rows"]:
        for seed, entry in row["by_seed"].items():
            cells = [f"{_number(entry['metrics'][c]['mean'], summary)} ({_interval(entry['metrics'][c], summary)})"
                     for c in columns]
            lines.append(f"| {row['label']} | {seed} | " + " | ".join(cells) + f" | {entry['runs']} | {_rate(entry['lr'])} |")
    return "\n".join(lines)


def not_counted(summary: dict) -> str:
    """The jobs the summary's numbers leave out, with why (empty when every job counted)."""
    jobs = summary.get("not_counted") or []
    if not jobs:
        return ""
    return "Not counted: " + "; ".join(f"{j['job']} ({j['state']}: {j['error'] or 'no error text'})" for j in jobs) + "."


# --- representation x learner --------------------------------------------------------------------

LEARNERS = {None: "SGD PLN", "ncm": "NCM", "slda": "SLDA", "gauss": "Gaussian"}  # None: the SGD PLN's rows
REPRESENTATIONS = ("OML", "ANML", "MAML-Rep", "SR-NN", "Pretraining", "Random")


def _learner_name(learner) -> str:
    return LEARNERS.get(learner, str(learner))


def _cells_by_learner(summary: dict, name: str, kind: str) -> dict:
    """{(representation, learner): row}: the representation is the row's method, qualified by its
    other settings only where one method has two rows of the same learner (two presets, say)."""
    source = f"summaries/{name}.json"
    if not summary["rows"]:
        raise UserError(f"table '{name}' ({kind}): {source} has no rows")
    if any("settings" not in row for row in summary["rows"]):
        raise UserError(f"table '{name}' ({kind}): {source} was made before summaries recorded each row's settings, "
                        f"so its rows' learners are unknown; make it again ({summary.get('made_by', 'experiment.aggregate')})")
    if not any("learner" in row["settings"] for row in summary["rows"]):
        raise UserError(f"table '{name}' ({kind}): the rows of {source} do not differ by learner (no 'learner' in their "
                        "settings), so which learner each row is cannot be read")
    keys = [(row["method"], row["settings"].get("learner")) for row in summary["rows"]]
    shared = {method for method, learner in keys if keys.count((method, learner)) > 1}
    cells = {}
    for (method, learner), row in zip(keys, summary["rows"]):
        others = ", ".join(f"{k}={v}" for k, v in row["settings"].items() if k != "learner")
        cells[method if method not in shared else f"{method} ({others})", learner] = row
    return cells


def _ordered(values, first) -> list:
    """`values` once each: those in `first` in its order, then the others in the order they came."""
    values = list(dict.fromkeys(values))
    rank = lambda v: next((i for i, f in enumerate(first) if v == f or str(v).startswith((f"{f} (", f"{f}: "))),
                          len(first))
    return sorted(values, key=rank)


def _class_columns(summary: dict, kind: str) -> list[str]:
    """Every class count any row has, ascending (a row that lacks one shows a dash)."""
    names = {n for row in summary["rows"] for n in row["metrics"] if n.startswith(f"{kind}@")}
    return sorted(names, key=lambda n: int(n.split("@")[1]))


def _apart_best(rows: list[dict], metric: str, summary: dict):
    """The row whose interval across seeds is apart from every other row's, on the better side; None
    when there is no other row, or a row has one seed (no interval), or the best one overlaps another."""
    shown = [row for row in rows if metric in row["metrics"]]
    if len(shown) < 2 or any(len(row["seeds"]) < 2 for row in shown):
        return None
    lower = _lower_is_better(summary)
    best = (min if lower else max)(shown, key=lambda row: row["metrics"][metric]["mean"])
    others = [row for row in shown if row is not best]
    return best if all(_apart(best["metrics"][metric], o["metrics"][metric], lower) for o in others) else None


def _compact_claims(summary: dict, metric: str) -> str:
    """The pairs whose intervals across seeds are apart, grouped by the better one; the rest said to overlap."""
    rows = [row for row in summary["rows"] if metric in row["metrics"]]
    single = [row["method"] for row in rows if len(row["seeds"]) < 2]
    note = f" One seed, not compared: {', '.join(single)}." if single else ""
    rows = [row for row in rows if len(row["seeds"]) > 1]
    if len(rows) < 2:
        return "Fewer than two rows with several seeds: no comparison across seeds." + note
    lower = _lower_is_better(summary)
    rows = sorted(rows, key=lambda r: r["metrics"][metric]["mean"], reverse=not lower)
    apart, pairs = [], len(rows) * (len(rows) - 1) // 2
    for i, a in enumerate(rows):
        below = [b["method"] for b in rows[i + 1:] if _apart(a["metrics"][metric], b["metrics"][metric], lower)]
        if below:
            apart.append((a["method"], below))
    claimed = sum(len(below) for _, below in apart)
    better = "lower" if lower else "higher"
    text = "; ".join(f"{a} {better} than {_listed(below)}" for a, below in apart)
    text += " (intervals apart)" if apart else ""
    if claimed == 0 and pairs == 1:
        text = f"{rows[0]['method']} and {rows[1]['method']} overlap (no claim)"
    elif claimed == 0:
        text = "every pair overlaps (no claim)"
    elif claimed < pairs:
        text += "; every other pair overlaps (no claim)"
    return text + "." + note


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _sgd_against_exact(cells: dict, representations: list, metrics: list[str], summary: dict) -> str:
    """Per representation, the SGD PLN against the exact learner with the highest mean, at the given counts."""
    lower = _lower_is_better(summary)
    parts = []
    for rep in representations:
        sgd = cells.get((rep, None))
        said: dict[tuple[str, str], list[str]] = {}
        for metric in metrics:
            exact = [(learner, row) for (r, learner), row in cells.items()
                     if r == rep and learner is not None and metric in row["metrics"]]
            if sgd is None or metric not in sgd["metrics"] or not exact:
                continue
            learner, best = (min if lower else max)(exact, key=lambda e: e[1]["metrics"][metric]["mean"])
            name, a, b = _learner_name(learner), best["metrics"][metric], sgd["metrics"][metric]
            if len(best["seeds"]) < 2 or len(sgd["seeds"]) < 2:
                claim = (f"{name} and SGD PLN", "not compared (one seed)")
            elif _apart(a, b, lower) or _apart(b, a, lower):
                first, second = (name, "SGD PLN") if _apart(a, b, lower) else ("SGD PLN", name)
                claim = (f"{first} {'lower' if lower else 'higher'} than {second}", "intervals apart")
            else:
                claim = (f"{name} and SGD PLN overlap", "no claim")
            said.setdefault(claim, []).append(metric.split("@")[1])
        if said:
            parts.append(f"{rep}: " + "; ".join(f"{claim} at {_listed(counts)} classes ({why})"
                                                for (claim, why), counts in said.items()) + ".")
    if not parts:
        return ""
    kind = _title(metrics[0]).split(",")[0]
    return (f"Reading (SGD PLN against the exact learner with the highest mean; {kind}, 95% t intervals across seeds): "
            + " ".join(parts))


def learners(summary: dict, name: str, kind: str = "held_out") -> str:
    """One row per representation x learner, grouped by representation; a combination not in the
    summary (a run not finished) shows dashes. Bold: the representation apart from every other
    under the same learner at that class count; readings per learner, then SGD PLN against exact."""
    cells = _cells_by_learner(summary, name, "learners" if kind == "held_out" else "learners_trajectory")
    representations = _ordered((rep for rep, _ in cells), REPRESENTATIONS)
    present = _ordered((learner for _, learner in cells), list(LEARNERS))
    columns = _class_columns(summary, kind)
    best = {(learner, c): _apart_best([row for (_, ln), row in cells.items() if ln == learner], c, summary)
            for learner in present for c in columns}
    lines = ["| representation | learner | seeds | " + " | ".join(f"{_title(c)}: mean (95% CI across seeds)" for c in columns)
             + " |", "|---|---|---|" + "---|" * len(columns)]
    for rep in representations:
        for i, learner in enumerate(present):
            row = cells.get((rep, learner))
            shown = f"| {rep} |" if i == 0 else "| |"
            if row is None:
                lines.append(f"{shown} {_learner_name(learner)} | — | " + " | ".join("—" for _ in columns) + " |")
                continue
            texts = []
            for c in columns:
                text = _cell(row["metrics"][c], row, summary) if c in row["metrics"] else "—"
                texts.append(f"**{text}**" if best[learner, c] is row else text)
            lines.append(f"{shown} {_learner_name(learner)} | {len(row['seeds'])} | " + " | ".join(texts) + " |")
    texts = []
    for learner in present:
        rows = [{**row, "method": rep} for (rep, ln), row in cells.items() if ln == learner]
        rows.sort(key=lambda row: representations.index(row["method"]))
        texts.append(readings({**summary, "rows": rows}, columns, claims=_compact_claims, about=_learner_name(learner)))
    ends = list(dict.fromkeys([columns[0], columns[-1]]))
    gaps = _sgd_against_exact(cells, representations, ends, summary)
    return "\n".join(lines) + "\n\n" + "\n\n".join(texts + ([gaps] if gaps else []))


# --- Table 2: learners x (setting, column) (experiment/aggregate_table2.py) ------------------------

TABLE2 = "omniglot_table2"
RESET = "--pln-reset"  # the evaluation flag that tells the two starts of the output layer apart
# None: the protocol's own start, which for Table 2's 2020 protocol is "all", Kaiming-normal weights
STARTS = {None: "Kaiming", "all": "Kaiming", "zero": "zero"}


@dataclass(frozen=True)
class Variants:
    """Two evaluations of every Table 2 column, told apart by one evaluation flag: the protocol's
    (first) and the other, compared side by side and paired by checkpoint."""
    kind: str                   # the table kind that shows them
    flag: str                   # the row setting that tells them apart
    names: tuple[str, str]      # (the protocol's, the other)
    name_of: Callable           # the flag's value -> one of `names`, None for a value it does not know
    what: str                   # "each {what}"
    each: str                   # "With {each.format(name)}"
    aggregate: str              # how to aggregate the two together


VARIANTS = (
    Variants("table2_reset", RESET, ("Kaiming", "zero"), lambda value: STARTS.get(value), "start of the output layer",
             "the {} start", "aggregate the Kaiming and the --reset zero sweeps together"),
    Variants("table2_search", "--hyperparameters-from", ("own search", "twin's search"),
             lambda value: "own search" if value is None else "twin's search",
             "search of the hyperparameters (the checkpoint's own, or its twin's through --hyperparameters-from)",
             "the {}", "aggregate the searched and the --hyperparameters-from sweeps together"),
)


def _column_name(row: dict, methods: list[str]) -> str:
    """The method; where two rows share it, the method and its variant (start, search), else the row's label."""
    if methods.count(row["method"]) == 1:
        return row["method"]
    for variants in VARIANTS:
        if variants.flag in row["settings"] and variants.name_of(row["settings"][variants.flag]) is not None:
            return f"{row['method']}: {variants.name_of(row['settings'][variants.flag])}"
    return row["label"]


def _table2_layout(summary: dict, name: str, kind: str):
    """(settings, learners, {column name: row}) in the paper's order; what is not the paper's comes after."""
    from experiment.evaluation.table2 import COLUMNS, LEARNER_NAMES, SETTINGS, setting_name
    if not summary["rows"]:
        raise UserError(f"table '{name}' ({kind}): summaries/{name}.json has no rows")
    methods = [row["method"] for row in summary["rows"]]  # two rows of one column: told apart by start or label
    columns = {_column_name(row, methods): row for row in summary["rows"]}
    columns = {c: columns[c] for c in _ordered(columns, COLUMNS)}
    cells = [cell for row in summary["rows"] for cell in row["cell_seeds"]]
    settings = _ordered((cell.split("/")[0] for cell in cells), [setting_name(*s) for s in SETTINGS])
    learners = _ordered((cell.split("/")[1] for cell in cells), LEARNER_NAMES)
    return settings, learners, columns


def _header(lead: list[str], cells: list[str]) -> list[str]:
    """A markdown table's header line and rule."""
    names = [*lead, *cells]
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _percent(stats: dict, interval: bool = True) -> str:
    mean = f"{100 * stats['mean']:.1f}"
    return f"{mean} ({100 * stats['ci_low']:.1f}–{100 * stats['ci_high']:.1f})" if interval else mean


def _across_seeds(stats: dict, seeds: int) -> str:
    return f"{_percent(stats)}, {seeds} seeds" if seeds > 1 else f"{_percent(stats, False)}, one seed"


def _table2_cells(row: dict, cell: str, kind: str = "held_out"):
    """(stats, seed count) of a column's cell, None when the column lacks it."""
    if cell not in row["cell_seeds"]:
        return None
    return row["metrics"][f"{kind}@{cell}"], len(row["cell_seeds"][cell])


def _table2_claims(columns: dict, cell: str) -> str:
    """The column pairs of one cell whose intervals across seeds are apart, the rest said to overlap."""
    present = {c: found for c, row in columns.items() if (found := _table2_cells(row, cell)) is not None}
    single = [c for c, (_, seeds) in present.items() if seeds < 2]
    ranked = sorted((c for c in present if c not in single), key=lambda c: -present[c][0]["mean"])
    said = []
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            apart = _apart(present[a][0], present[b][0], lower=False)
            said.append(f"{a} higher than {b} (intervals apart)" if apart else f"{a} and {b} overlap (no claim)")
    if single:
        said.append(f"one seed, not compared: {_listed(single)}")
    return "; ".join(said) or "no column to compare"


def table2(summary: dict, name: str = "summary") -> str:
    """The paper's layout: rows learners, columns setting x column; each cell the held-out accuracy (%)
    across meta-training seeds with its 95% t interval and seed count, the paper's mean in parentheses.
    Bold: the column apart from every other in that setting and learner. One reading per setting."""
    from experiment.evaluation.table2 import COLUMNS, PAPER, ROW_LABELS
    settings, learners, columns = _table2_layout(summary, name, "table2")
    lines = ["Held-out accuracy (%): mean over meta-training seeds (95% t interval across seeds), the number of "
             "seeds, and in parentheses the paper's mean (its Table 2: 10 runs of one trained model). Settings: "
             "classes per task x tasks.", "",
             *_header(["learner"], [f"{s}: {c}" for s in settings for c in columns])]
    for learner in learners:
        shown = []
        for setting in settings:
            cell = f"{setting}/{learner}"
            rows = [{"method": c, "seeds": range(found[1]), "metrics": {"m": found[0]}}
                    for c, row in columns.items() if (found := _table2_cells(row, cell)) is not None]
            best = _apart_best(rows, "m", summary)
            for column, row in columns.items():
                found = _table2_cells(row, cell)
                text = "—" if found is None else _across_seeds(*found)
                if best is not None and best["method"] == column:
                    text = f"**{text}**"
                paper = PAPER.get(learner, {}).get(setting)
                if paper is not None and column in COLUMNS:  # the paper's (mean, std) per column, in COLUMNS order
                    text += f" (paper {paper[2 * COLUMNS.index(column)]:.2f})"
                shown.append(text)
        lines.append(f"| {ROW_LABELS.get(learner, learner)} | " + " | ".join(shown) + " |")
    texts = [f"Reading (held-out, {setting}, 95% t intervals across seeds): {_claims_by_learner(columns, setting, learners)}"
             for setting in settings]
    return "\n".join(lines) + "\n\n" + "\n\n".join(texts)


def _claims_by_learner(columns: dict, setting: str, learners: list[str]) -> str:
    """One setting's column comparisons, learners with the same comparisons said together."""
    from experiment.evaluation.table2 import ROW_LABELS
    by_claims: dict[str, list[str]] = {}
    for learner in learners:
        by_claims.setdefault(_table2_claims(columns, f"{setting}/{learner}"), []).append(ROW_LABELS.get(learner, learner))
    return " ".join(f"{_listed(names)}: {claims}." for claims, names in by_claims.items())


def _hyperparameters(chosen: list[dict]) -> str:
    return "; ".join(" ".join(f"{k}={v:g}" for k, v in hp.items()) for hp in chosen)


def table2_seeds(summary: dict, name: str = "summary") -> str:
    """Per column, setting, learner and meta-training seed: held-out and trajectory accuracy (%) with the
    95% bootstrap interval over that seed's runs, the runs, and the hyperparameters its search chose."""
    from experiment.evaluation.table2 import ROW_LABELS
    settings, learners, columns = _table2_layout(summary, name, "table2_seeds")
    lines = ["| column | setting | learner | seed | held-out (95% CI over runs) | trajectory (95% CI over runs) | runs "
             "| hyperparameters |", "|---|---|---|---|---|---|---|---|"]
    for column, row in columns.items():
        for setting in settings:
            for learner in learners:
                cell = f"{setting}/{learner}"
                for seed in row["cell_seeds"].get(cell, []):
                    entry = row["by_seed"][str(seed)]
                    held_out, trajectory = (entry["metrics"][f"{kind}@{cell}"] for kind in ("held_out", "trajectory"))
                    lines.append(f"| {column} | {setting} | {ROW_LABELS.get(learner, learner)} | {seed} | "
                                 f"{_percent(held_out)} | {_percent(trajectory)} | "
                                 f"{entry['runs'][cell]} | {_hyperparameters(entry['hyperparameters'][cell])} |")
    return "\n".join(lines)


def _by_variant(summary: dict, name: str, variants: Variants) -> dict:
    """{column: {variant: row}} in the paper's column order; each column needs both variants."""
    from experiment.evaluation.table2 import COLUMNS
    columns: dict[str, dict] = {}
    for row in summary["rows"]:
        variant = variants.name_of(row["settings"][variants.flag]) if variants.flag in row["settings"] else None
        if variant is None:
            raise UserError(f"table '{name}' ({variants.kind}): row '{row['label']}' is not told apart by "
                            f"{variants.flag} ({variants.aggregate})")
        if variant in columns.setdefault(row["method"], {}):
            raise UserError(f"table '{name}' ({variants.kind}): two {variant} rows of {row['method']}")
        columns[row["method"]][variant] = row
    lacking = [f"{c} ({'/'.join(v for v in variants.names if v not in found)})"
               for c, found in columns.items() if len(found) < len(variants.names)]
    if lacking:
        raise UserError(f"table '{name}' ({variants.kind}): no row for {', '.join(lacking)}")
    return {c: columns[c] for c in _ordered(columns, COLUMNS)}


def _variant_cell(row: dict, cell: str) -> str:
    """Held-out %: across seeds with the t interval, or one seed's mean with the bootstrap interval over its runs."""
    if cell not in row["cell_seeds"]:
        return "—"
    seeds = row["cell_seeds"][cell]
    if len(seeds) > 1:
        return _across_seeds(row["metrics"][f"held_out@{cell}"], len(seeds))
    return f"{_percent(row['by_seed'][str(seeds[0])]['metrics'][f'held_out@{cell}'])}, seed {seeds[0]}"


def table2_variants(summary: dict, name: str, variants: Variants) -> str:
    """Each column of Table 2 in its two variants side by side (one row per setting and learner), the
    other minus the protocol's paired by checkpoint, and the readings from the intervals across seeds."""
    from experiment.evaluation.table2 import ROW_LABELS
    settings, learners, _ = _table2_layout(summary, name, variants.kind)
    columns = _by_variant(summary, name, variants)
    first, other = variants.names
    lines = [f"Held-out accuracy (%) with each {variants.what}: over several meta-training seeds the mean "
             "(95% t interval across seeds); over one, that checkpoint's mean (95% bootstrap interval over its "
             "evaluation runs, which says nothing about another seed).", "",
             *_header(["setting", "learner"], [f"{c}: {v}" for c in columns for v in variants.names])]
    for setting in settings:
        for learner in learners:
            cell = f"{setting}/{learner}"
            shown = [_variant_cell(found[v], cell) for found in columns.values() for v in variants.names]
            lines.append(f"| {setting} | {ROW_LABELS.get(learner, learner)} | " + " | ".join(shown) + " |")
    lines += ["", f"{other.capitalize()} minus {first} (held-out, percentage points), paired by checkpoint: the mean "
              "of the per-seed differences (95% t interval across seeds).", "",
              *_header(["setting", "learner"], list(columns))]
    for setting in settings:
        for learner in learners:
            differences = [_paired_difference(found, f"{setting}/{learner}", variants) for found in columns.values()]
            shown = ["—" if d is None else _points(d) for d in differences]
            lines.append(f"| {setting} | {ROW_LABELS.get(learner, learner)} | " + " | ".join(shown) + " |")
    texts = [_same_choices(columns, [f"{s}/{learner}" for s in settings for learner in learners], variants)]
    for setting in settings:
        texts.append(f"{other.capitalize()} against {first} ({setting}, held-out, paired 95% t intervals across "
                     f"seeds): {_variant_moves(columns, setting, learners, variants)}.")
        for variant in variants.names if len(columns) > 1 else ():  # one column: nothing to compare it with
            by_variant = {column: found[variant] for column, found in columns.items()}
            texts.append(f"With {variants.each.format(variant)} ({setting}, held-out, 95% t intervals across seeds): "
                         f"{_claims_by_learner(by_variant, setting, learners)}")
    return "\n".join(lines) + "\n\n" + "\n\n".join(texts)


def _same_choices(columns: dict, cells: list[str], variants: Variants) -> str:
    """In how many of the cells both variants evaluated, per checkpoint, they used the same hyperparameters."""
    counts = {}
    for column, found in columns.items():
        first, other = (found[v] for v in variants.names)
        pairs = [(cell, seed) for cell in cells
                 for seed in sorted(set(first["cell_seeds"].get(cell, [])) & set(other["cell_seeds"].get(cell, [])))]
        chosen = lambda row, cell, seed: row["by_seed"][str(seed)]["hyperparameters"][cell]
        counts[column] = (sum(chosen(first, *pair) == chosen(other, *pair) for pair in pairs), len(pairs))
    same, cells_in_all = (sum(count[i] for count in counts.values()) for i in (0, 1))
    per_column = f" ({', '.join(f'{c} {n} of {m}' for c, (n, m) in counts.items())})" if len(counts) > 1 else ""
    first, other = (variants.each.format(name) for name in variants.names)
    return (f"The same hyperparameters chosen with {first} and with {other}: in {same} of the {cells_in_all} "
            f"cells of a checkpoint{per_column}.")


def _paired_difference(found: dict, cell: str, variants: Variants):
    """The other variant minus the protocol's held-out accuracy per checkpoint both evaluated, with the
    95% t interval across those seeds (the same checkpoints, so the pairs remove the seed-to-seed
    spread); None when the column lacks the cell, a dict with one seed's difference (no interval)
    when only one pairs."""
    from utils.stats import t_interval
    first, other = (found[v] for v in variants.names)
    seeds = sorted(set(first["cell_seeds"].get(cell, [])) & set(other["cell_seeds"].get(cell, [])))
    if not seeds:
        return None
    held_out = lambda row, seed: row["by_seed"][str(seed)]["metrics"][f"held_out@{cell}"]["mean"]
    return {**t_interval([held_out(other, s) - held_out(first, s) for s in seeds]), "seeds": len(seeds)}


def _points(difference: dict) -> str:
    mean = f"{100 * difference['mean']:+.1f}"
    if difference["seeds"] < 2:
        return f"{mean}, one seed"
    return f"{mean} ({100 * difference['ci_low']:+.1f} to {100 * difference['ci_high']:+.1f})"


def _variant_moves(columns: dict, setting: str, learners: list[str], variants: Variants) -> str:
    """Per column, the learners whose paired difference interval lies above zero, below it, or across it."""
    from experiment.evaluation.table2 import ROW_LABELS
    said = []
    for column, found in columns.items():
        moves: dict[str, list[str]] = {}
        for learner in learners:
            difference = _paired_difference(found, f"{setting}/{learner}", variants)
            if difference is None:
                continue
            if difference["seeds"] < 2:
                move = "one seed, not compared"
            elif difference["ci_low"] > 0:
                move = f"higher with {variants.names[1]}"
            elif difference["ci_high"] < 0:
                move = f"lower with {variants.names[1]}"
            else:
                move = "not told apart"
            moves.setdefault(move, []).append(ROW_LABELS.get(learner, learner))
        said.append(f"{column}: " + ", ".join(f"{move} for {_listed(names)}" for move, names in moves.items()))
    return "; ".join(said)


def render(summary: dict, kind: str, name: str = "summary") -> str:
    """The markdown of one table block; `name` (the summary's) is for error messages."""
    if kind not in KINDS:
        raise UserError(f"unknown table kind {kind!r} (choose {', '.join(KINDS)})")
    if kind.startswith("table2") != (summary.get("benchmark") == TABLE2):
        raise UserError(f"table '{name}': kind {kind!r} does not fit summaries/{name}.json (benchmark "
                        f"{summary.get('benchmark')!r}); a Table 2 summary takes the kinds table2, table2_seeds, "
                        "table2_reset and table2_search, others the rest")
    if kind.startswith("table2"):
        variants = {v.kind: v for v in VARIANTS}
        table = (table2_variants(summary, name, variants[kind]) if kind in variants
                 else {"table2": table2, "table2_seeds": table2_seeds}[kind](summary, name))
    elif kind.startswith("learners"):
        table = learners(summary, name, "trajectory" if kind == "learners_trajectory" else "held_out")
    elif kind == "seeds":
        table = seeds(summary)
    elif kind == "trajectory":
        if summary.get("benchmark") == "sine":
            raise UserError(f"table '{name}': kind 'trajectory' is for Omniglot summaries (sine has no trajectory accuracy)")
        table = headline(summary, kind="trajectory")
    else:
        table = headline(summary, with_reading=kind == "headline")
    missing = not_counted(summary)
    return table + ("\n\n" + missing if missing else "")


def regenerate(text: str, repo: Path) -> str:
    """`text` with every table block replaced by what its summary gives."""
    def replace(match):
        name, kind = match.group(2), match.group(3) or "headline"
        if name == "compute":  # not one summary's: every summary's sweeps, hours and commands
            from analysis import compute_table
            return match.group(1) + compute_table.render(repo) + "\n" + match.group(5)
        return match.group(1) + render(read_summary(repo, name), kind, name) + "\n" + match.group(5)
    return BLOCK.sub(replace, text)


def stale_files(repo: Path) -> dict[Path, str]:
    """{file: its regenerated text} for every markdown file whose tables differ from their summaries."""
    stale = {}
    for path in markdown_files(repo):
        text = path.read_text()
        new = regenerate(text, repo)
        if new != text:
            stale[path] = new
    return stale
