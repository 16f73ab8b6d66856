"""The README's and docs' result tables, generated from the committed summaries (summaries/*.json).

A table lives in a markdown file between two markers; everything between them is generated:

    <!-- table: sine_quick -->          the headline rows of summaries/sine_quick.json
    <!-- table: sine_quick seeds -->    one row per meta-training seed
    <!-- table: sine_quick candidates -->   the rows without a reading: candidates of a choice
    ...generated...
    <!-- /table -->

`python plot_results.py --tables` rewrites every such block in README.md and docs/*.md;
tests/test_tables.py fails when a committed block differs from what its summary gives.
"""
import json
import re
from pathlib import Path

from utils.errors import UserError

BLOCK = re.compile(r"(<!-- table: *([\w.-]+)(?: +(\w+))? *-->\n)(.*?)(<!-- /table -->)", re.S)
KINDS = ("headline", "seeds", "candidates")
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


def _title(name: str) -> str:
    if name in METRIC_TITLES:
        return METRIC_TITLES[name]
    kind, n = name.split("@")
    return f"{'held-out' if kind == 'held_out' else 'trajectory'}, {n} classes"


def _columns(summary: dict) -> list[str]:
    """The metrics shown, in a fixed order (the summary's keys are sorted as text): sine the MSE after
    all functions, then after function 1; Omniglot the held-out accuracy at each class count, ascending."""
    names = list(summary["rows"][0]["metrics"])
    if summary["benchmark"] == "sine":
        return [n for n in METRIC_TITLES if n in names]
    return sorted((n for n in names if n.startswith("held_out@")), key=lambda n: int(n.split("@")[1]))


def _rate(rates: list) -> str:
    def text(rate):  # None: a learner with no rate (the streaming learners)
        return "none" if rate is None else f"{rate:g}"
    shown = []
    for rate in rates:
        shown.append(text(rate) if not isinstance(rate, dict) else "/".join(text(v) for v in rate.values()))
    return ", ".join(dict.fromkeys(shown))


# --- the tables ------------------------------------------------------------------------------------

def headline(summary: dict, with_reading: bool = True) -> str:
    columns = _columns(summary)
    primary = columns[0]
    best = (min if _lower_is_better(summary) else max)(summary["rows"], key=lambda r: r["metrics"][primary]["mean"])
    lines = ["| method | seeds | " + " | ".join(f"{_title(c)}: mean (95% CI across seeds)" for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for row in summary["rows"]:
        cells = []
        for c in columns:
            stats = row["metrics"][c]
            text = f"{_number(stats['mean'], summary)} ({_interval(stats, summary)})" if len(row["seeds"]) > 1 \
                else f"{_number(stats['mean'], summary)} (one seed)"
            cells.append(f"**{text}**" if row is best and c == primary and with_reading else text)
        lines.append(f"| {row['label']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    # Omniglot's claims can differ by class count (a tie at 10 classes, a gap at 600), so each
    # count gets its own reading; sine has one headline metric.
    read = [primary] if summary["benchmark"] == "sine" else columns
    return "\n".join(lines + (["", readings(summary, read)] if with_reading else []))


def readings(summary: dict, metrics: list[str]) -> str:
    """One reading per distinct set of claims: class counts whose claims are the same share one."""
    by_claims: dict[str, list[str]] = {}
    for metric in metrics:
        by_claims.setdefault(_claims(summary, metric), []).append(metric)
    texts = []
    for claims, shared in by_claims.items():
        if claims.startswith("Fewer than two"):
            texts.append(claims)
            continue
        if len(shared) == 1:
            title = _title(shared[0])
        else:
            counts = [m.split("@")[1] for m in shared]
            title = f"{_title(shared[0]).split(',')[0]}, {', '.join(counts[:-1])} and {counts[-1]} classes"
        texts.append(f"Reading ({title}, 95% t intervals across seeds): {claims}")
    return " ".join(texts)


def _claims(summary: dict, metric: str) -> str:
    """The comparisons the intervals across seeds support at one metric, worded from them alone."""
    rows = [r for r in summary["rows"] if len(r["seeds"]) > 1]
    if len(rows) < 2:
        return "Fewer than two rows with several seeds: no comparison across seeds."
    lower = _lower_is_better(summary)
    rows = sorted(rows, key=lambda r: r["metrics"][metric]["mean"], reverse=not lower)
    apart, overlap = [], []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            sa, sb = a["metrics"][metric], b["metrics"][metric]
            separated = sa["ci_high"] < sb["ci_low"] if lower else sa["ci_low"] > sb["ci_high"]
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


def render(summary: dict, kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"unknown table kind {kind!r} (choose {', '.join(KINDS)})")
    table = seeds(summary) if kind == "seeds" else headline(summary, with_reading=kind == "headline")
    missing = not_counted(summary)
    return table + ("\n\n" + missing if missing else "")


def regenerate(text: str, repo: Path) -> str:
    """`text` with every table block replaced by what its summary gives."""
    def replace(match):
        name, kind = match.group(2), match.group(3) or "headline"
        return match.group(1) + render(read_summary(repo, name), kind) + "\n" + match.group(5)
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
