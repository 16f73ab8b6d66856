"""docs/compute.md's table: what each committed summary's sweeps cost, and the commands that rerun them.

Reads every summaries/*.json (its `compute` entry, experiment/summaries.py): per summary, the sweeps
it aggregates and those they rest on (the training sweeps they evaluate, the sweeps whose runs chose
their hyperparameters), with their jobs, wall hours and CPU hours, the summary's total, and one
total over all summaries that counts a sweep shared by several summaries once. Then, per summary,
its commands in the order they must run: each training sweep, each evaluation sweep after the sweeps
it rests on, the aggregate (with a comment naming the rows it keeps from the summary itself, for a
summary made with --keep-rows). analysis/tables.py puts it between the markers
`<!-- table: compute -->` and `<!-- /table -->`.
"""
import json
from pathlib import Path

from experiment.sweep_compute import NAMED, total
from utils.errors import UserError

ROLES = ("training", "evaluation")  # the order the sweeps run in: a training sweep before its evaluations


def read_summaries(repo: Path) -> dict[str, dict]:
    summaries = {}
    for path in sorted((Path(repo) / "summaries").glob("*.json")):
        try:
            summaries[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"table 'compute': cannot read {path} ({type(err).__name__})") from None
    return summaries


def _hours(value) -> str:
    return "not recorded" if value is None else f"{value:.2f}"


def in_order(compute: dict) -> list[dict]:
    """The summary's sweeps in an order they can run in: each after the sweeps it rests on (NAMED: the
    training sweeps it evaluates, the sweeps whose runs chose its hyperparameters); otherwise training
    sweeps first, each role in its recorded order."""
    left = sorted(compute["sweeps"], key=lambda s: ROLES.index(s["role"]) if s["role"] in ROLES else len(ROLES))
    present = {s["name"] for s in left}
    ordered, done = [], set()
    while left:
        ready = next((s for s in left if {n for key in NAMED for n in s.get(key) or []} & present <= done), left[0])
        ordered.append(ready)
        done.add(ready["name"])
        left.remove(ready)
    return ordered


def _line(*cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def _row(table: str, sweep: dict) -> str:
    if "missing" in sweep:
        return _line(table, sweep["name"], sweep["role"], "folder not found", "", "")
    return _line(table, sweep["name"], sweep["role"], sweep["jobs"], _hours(sweep["wall_hours"]), _hours(sweep["cpu_hours"]))


def overall(summaries: dict[str, dict]) -> dict:
    """Jobs and hours over every summary's sweeps, a sweep shared by several summaries counted once."""
    unique = {}
    for summary in summaries.values():
        for sweep in (summary.get("compute") or {}).get("sweeps", []):
            if "missing" not in sweep:
                unique.setdefault(sweep["name"], sweep)
    return total(list(unique.values()))


def table(summaries: dict[str, dict]) -> str:
    lines = ["| table (summary) | sweep | role | jobs | wall hours | CPU hours |", "|---|---|---|---|---|---|"]
    unrecorded = []
    for name, summary in summaries.items():
        compute = summary.get("compute")
        if not compute:
            unrecorded.append(name)
            continue
        for i, sweep in enumerate(in_order(compute)):
            lines.append(_row(name if i == 0 else "", sweep))
        summed = compute["total"]
        lines.append(_line("", f"**total** ({summed['sweeps']} sweeps)", "", f"**{summed['jobs']}**",
                           f"**{_hours(summed['wall_hours'])}**", f"**{_hours(summed['cpu_hours'])}**"))
    every = overall(summaries)
    lines.append(_line("**all tables**", f"{every['sweeps']} sweeps, each once", "", f"**{every['jobs']}**",
                       f"**{_hours(every['wall_hours'])}**", f"**{_hours(every['cpu_hours'])}**"))
    if unrecorded:
        lines += ["", "No compute recorded (summaries written before it was; regenerate them with their aggregate): "
                  + ", ".join(unrecorded) + "."]
    return "\n".join(lines)


def commands(summaries: dict[str, dict]) -> str:
    lines = ["```bash", "export OMP_NUM_THREADS=1"]
    for name, summary in summaries.items():
        compute = summary.get("compute")
        if not compute:
            continue
        lines += ["", f"# {name}"]
        lines += [sweep["rerun"] for sweep in in_order(compute) if "rerun" in sweep]
        kept = summary.get("kept_rows")
        if kept:  # experiment/summaries.py keep_rows: the aggregate reads those rows from the summary itself
            lines.append(f"# the aggregate keeps {', '.join(kept['labels'])} as {kept['from']} holds them "
                         f"(from {', '.join(kept['sweeps'])}); aggregating every evaluation sweep above instead "
                         "remakes them")
        lines.append(compute["aggregate"])
    return "\n".join(lines + ["```"])


def render(repo: Path) -> str:
    summaries = read_summaries(repo)
    return table(summaries) + "\n\nThe commands, per table, in the order they run:\n\n" + commands(summaries)
