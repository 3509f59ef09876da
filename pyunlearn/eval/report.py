"""`Results`: the table of an unlearning benchmark, {task: {method: {UA, RA, TA, MIA, RTE, avg_gap}}}.

Printed as a fixed-width table, saved as JSON of exactly that shape, drawn as a matplotlib figure. Avg. Gap of
every method is measured against the "retrain" entry of the same task (spec §2.5)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from numbers import Real
from pathlib import Path

from pyunlearn.eval.metrics import METRICS, avg_gap

RETRAIN = "retrain"
FIELDS = METRICS + ("RTE", "avg_gap")  # the exact key set of one entry
DECIMALS = 4  # stored precision: 1e-4 percentage points / 0.1 ms, far below run-to-run noise
PathLike = str | os.PathLike


def _number(v, what: str, *, allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, Real):
        raise TypeError(f"{what} must be a number{' or None' if allow_none else ''}, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v!r}")
    return float(v)


def _name(v, what: str) -> str:
    if not isinstance(v, str) or not v:
        raise TypeError(f"{what} must be a non-empty str, got {v!r}")
    return v


class Results:
    """Unlearning results per task and method: {task: {method: {"UA","RA","TA","MIA","RTE","avg_gap"}}}.

    UA/RA/TA/MIA in percent (from `evaluate`), RTE in seconds (the method call's wall clock, spec §2.3),
    avg_gap in percentage points against that task's "retrain" entry (None until `finalize()`, and for tasks
    without one). Tasks and methods keep insertion order; `table()` and `plot()` put "retrain" first."""

    def __init__(self, data: dict | None = None):
        self.data: dict[str, dict[str, dict]] = {}
        self._stale = False
        if data is not None:
            self.data = _validated(data, "data")

    # ------------------------------------------------------------------------------------------- building
    def add(self, task: str, method: str, metrics: dict, rte: float | None) -> None:
        """Record `method` on `task`: metrics needs UA, RA, TA, MIA (extra keys such as evaluate's
        TA_forget_class are ignored), rte is seconds (None if not measured). Adding a pair twice raises.

        Values are stored rounded to DECIMALS, exactly as to_json writes them: a Results reloaded from JSON
        and extended (a resumed run) computes the same Avg. Gaps as one that never left memory."""
        _name(task, "task")
        _name(method, "method")
        if not isinstance(metrics, dict):
            raise TypeError(f"metrics must be a dict with keys {METRICS}, got {type(metrics).__name__}")
        missing = [k for k in METRICS if k not in metrics]
        if missing:
            raise ValueError(f"metrics must have keys {METRICS}, missing {missing} (got {sorted(metrics)})")
        entry = {k: round(_number(metrics[k], f"metrics[{k!r}]"), DECIMALS) for k in METRICS}
        rte = _number(rte, "rte", allow_none=True)
        if rte is not None and rte < 0:
            raise ValueError(f"rte must be >= 0 seconds, got {rte}")
        rte = None if rte is None else round(rte, DECIMALS)
        if method in self.data.get(task, {}):
            raise ValueError(f"task {task!r} already has a result for method {method!r}")
        entry["RTE"] = rte
        entry["avg_gap"] = None
        self.data.setdefault(task, {})[method] = entry
        self._stale = True

    def finalize(self) -> Results:
        """Fill avg_gap of every entry against its task's "retrain" entry (Retrain's own gap is 0; None for
        tasks without Retrain). Idempotent; table/to_json/plot call it when entries were added since."""
        for methods in self.data.values():
            ref = methods.get(RETRAIN)
            for entry in methods.values():
                entry["avg_gap"] = None if ref is None else round(avg_gap(entry, ref), DECIMALS)
        self._stale = False
        return self

    def _ready(self) -> None:
        if self._stale:
            self.finalize()

    def _ordered(self, task: str) -> list[str]:
        methods = list(self.data[task])
        return ([RETRAIN] if RETRAIN in methods else []) + [m for m in methods if m != RETRAIN]

    # ------------------------------------------------------------------------------------------------ text
    def table(self) -> str:
        """Fixed-width text table, one block per task, Retrain first. Percent with 2 decimals, RTE seconds."""
        self._ready()
        heads = ("UA", "RA", "TA", "MIA", "RTE (s)", "Avg. Gap")
        width = 9
        blocks = []
        for task in self.data:
            order = self._ordered(task)
            mw = max(len("method"), *(len(m) for m in order))
            lines = [f"task: {task}",
                     "method".ljust(mw) + "".join(h.rjust(width + 1) for h in heads),
                     "-" * mw + ("  " + "-" * (width - 1)) * len(heads)]
            for m in order:
                e = self.data[task][m]
                cells = [f"{e[k]:.2f}" for k in METRICS]
                cells.append("-" if e["RTE"] is None else f"{e['RTE']:.2f}")
                cells.append("-" if e["avg_gap"] is None else f"{e['avg_gap']:.2f}")
                lines.append(m.ljust(mw) + "".join(c.rjust(width + 1) for c in cells))
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) if blocks else "(no results)"

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        n = sum(len(v) for v in self.data.values())
        return f"Results({len(self.data)} task(s), {n} entr{'y' if n == 1 else 'ies'})"

    # ------------------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """The JSON-ready dict, floats rounded to DECIMALS."""
        self._ready()
        return {t: {m: {k: (None if e[k] is None else round(e[k], DECIMALS)) for k in FIELDS}
                    for m, e in methods.items()} for t, methods in self.data.items()}

    def to_json(self, path: PathLike) -> Path:
        """Write {task: {method: {UA, RA, TA, MIA, RTE, avg_gap}}} to `path` atomically (temp file in the
        same folder, then os.replace: readers never see half a file). Parent folders are created.
        Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def from_json(cls, path: PathLike) -> Results:
        """Load what `to_json` wrote; the schema is checked (ValueError/TypeError naming the bad entry)."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls(data)

    # ------------------------------------------------------------------------------------------------ plot
    def plot(self, path: PathLike, *, dpi: int = 120) -> Path:
        """Save a PNG: one row per task; left, grouped bars of UA/RA/TA/MIA per method with Retrain's value
        of each metric drawn as a black reference tick across that metric's bar of every method (the bar's
        distance to its tick is the gap); Avg. Gap under each method name; right, RTE per method (log scale).
        Uses matplotlib's Agg canvas directly: no pyplot, no global backend change."""
        from pyunlearn.eval._plot import plot_results

        self._ready()
        if not self.data:
            raise ValueError("nothing to plot: Results is empty")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_results({t: {m: self.data[t][m] for m in self._ordered(t)} for t in self.data}, path, dpi=dpi)
        return path


def _validated(data, name: str) -> dict:
    """Deep-copied, type-checked {task: {method: entry}} with exactly FIELDS per entry."""
    if not isinstance(data, dict):
        raise TypeError(f"{name} must be a dict {{task: {{method: entry}}}}, got {type(data).__name__}")
    out = {}
    for task, methods in data.items():
        if not isinstance(task, str) or not isinstance(methods, dict):
            raise TypeError(f"{name}: task {task!r} must map a str to a dict of methods, "
                            f"got {type(methods).__name__}")
        out[task] = {}
        for method, e in methods.items():
            where = f"{name}[{task!r}][{method!r}]"
            if not isinstance(method, str) or not isinstance(e, dict) or set(e) != set(FIELDS):
                got = sorted(e) if isinstance(e, dict) else type(e).__name__
                raise ValueError(f"{where} must be a dict with exactly the keys {FIELDS}, got {got}")
            entry = {k: round(_number(e[k], f"{where}[{k!r}]"), DECIMALS) for k in METRICS}
            rte = _number(e["RTE"], f"{where}['RTE']", allow_none=True)
            entry["RTE"] = None if rte is None else round(rte, DECIMALS)
            entry["avg_gap"] = _number(e["avg_gap"], f"{where}['avg_gap']", allow_none=True)
            out[task][method] = entry
    return out


__all__ = ["FIELDS", "RETRAIN", "Results"]
