"""The Results figure (matplotlib, Agg canvas; imported only by Results.plot so matplotlib stays optional)."""

from __future__ import annotations

from pathlib import Path

from pyunlearn.eval.metrics import METRICS

_COLORS = {"UA": "#4C72B0", "RA": "#55A868", "TA": "#C44E52", "MIA": "#8172B2"}
_STEP = 0.2  # bar spacing: the 4 bars of a method span 0.8 of the unit spacing between methods
_BAR = 0.17  # bar width; Retrain's tick is _STEP wide: it overhangs the bar, visible even at equal height


def plot_results(data: dict, path: Path, *, dpi: int = 120) -> None:
    """data: {task: {method: entry}}, methods already ordered (Retrain first). Writes a PNG to `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n_methods = max(len(m) for m in data.values())
    fig = Figure(figsize=(max(8.0, 1.1 * n_methods + 4.5), 3.9 * len(data)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(data), 2, squeeze=False, gridspec_kw={"width_ratios": [4, 1.2]})
    for row, (task, methods) in enumerate(data.items()):
        ax, ax_t = axes[row]
        names = list(methods)
        ref = methods.get("retrain")
        for i, name in enumerate(names):
            e = methods[name]
            if name == "retrain":
                ax.axvspan(i - 0.5, i + 0.5, color="0.92", zorder=0)
            for j, k in enumerate(METRICS):
                x = i + (j - 1.5) * _STEP
                ax.bar(x, e[k], _BAR, color=_COLORS[k], zorder=2)
                if ref is not None:
                    # Retrain's value of this metric as a tick across the bar: bar end vs tick = the gap.
                    ax.hlines(ref[k], x - _STEP / 2, x + _STEP / 2, colors="black", linewidths=2.0, zorder=3)
        gaps = [methods[n]["avg_gap"] for n in names]
        labels = [n if g is None else f"{n}\ngap {g:.2f}" for n, g in zip(names, gaps)]
        ax.set_xticks(range(len(names)), labels, fontsize=9)
        ax.set_xlim(-0.5, n_methods - 0.5)  # same bar width in every row; short rows leave space on the right
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.grid(axis="y", color="0.85", linewidth=0.6, zorder=1)
        ax.set_title(f"{task}" + ("" if ref is not None else "  (no Retrain entry: no reference, no gap)"),
                     fontsize=11, loc="left", fontweight="bold")
        handles = [Patch(color=_COLORS[k], label=k) for k in METRICS]
        if ref is not None:
            handles.append(Line2D([], [], color="black", linewidth=2.0, label="Retrain's value"))
        ax.legend(handles=handles, ncol=len(handles), fontsize=8, loc="lower right", bbox_to_anchor=(1, 1.0),
                  frameon=False, borderaxespad=0.2, handlelength=1.5, columnspacing=1.2)

        rte = [methods[n]["RTE"] for n in names]
        y = range(len(names))
        ax_t.barh(y, [0 if r is None else r for r in rte], color="0.45", height=0.6, zorder=2)
        for i, r in enumerate(rte):
            text = "n/a" if r is None else f"{r:.0f} s" if r >= 100 else f"{r:.3g} s"
            ax_t.annotate(text, (0 if r is None else r, i), xytext=(3, 0), textcoords="offset points",
                          va="center", fontsize=8)
        ax_t.set_yticks(y, names, fontsize=9)
        known = [r for r in rte if r is not None]
        if known and all(r > 0 for r in known):
            ax_t.set_xscale("log")  # Retrain is typically 10-1000x slower than the approximate methods
            ax_t.set_xlim(min(known) / 2, max(known) * 12)  # room for the value labels
        elif known:
            ax_t.set_xlim(0, max(max(known), 1e-9) * 1.35)
        ax_t.grid(axis="x", color="0.85", linewidth=0.6, zorder=1)
        ax_t.set_xlabel("RTE (s)")
        ax_t.set_ylim(max(n_methods, len(names)) - 0.5, -0.5)  # aligned with the bar rows, first on top
        ax_t.set_title("run time (RTE)", fontsize=10, loc="left")
    fig.savefig(path, dpi=dpi, format="png")
