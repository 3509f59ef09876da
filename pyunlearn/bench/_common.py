"""Benchmark plumbing shared by every family: timing, correctness-before-timing, tables, JSON."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch


@dataclass
class Row:
    case: str
    provider: str
    ms: float  # median
    ms_q20: float
    ms_q80: float
    gbps: Optional[float] = None  # from the byte formula written next to the case
    note: str = ""
    speedup: Optional[float] = None  # vs the case's peer to beat (filled in by finish())


@dataclass
class Report:
    family: str
    device: str
    meta: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], None], device: str, *, warmup: int = 3, reps: int = 20,
            budget_s: float = 2.0) -> tuple[float, float, float]:
    """(median, q20, q80) in ms. CUDA events on the GPU, perf_counter on the CPU; stops early past budget_s."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(reps):
        if device.startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    qs = statistics.quantiles(times, n=5) if len(times) >= 2 else [times[0]] * 4
    return statistics.median(times), qs[0], qs[3]


def format_table(report: Report) -> str:
    head = f"{'case':<34} {'provider':<34} {'ms (median)':>11} {'q20-q80':>17} {'GB/s':>8} {'speedup':>8}  note"
    lines = [f"# {report.family} on {report.device}  " + "  ".join(f"{k}={v}" for k, v in report.meta.items()),
             head, "-" * len(head)]
    for r in report.rows:
        gb = f"{r.gbps:8.1f}" if r.gbps is not None else f"{'':>8}"
        sp = f"{r.speedup:7.2f}x" if r.speedup is not None else f"{'':>8}"
        lines.append(f"{r.case:<34} {r.provider:<34} {r.ms:11.3f} {r.ms_q20:8.3f}-{r.ms_q80:<8.3f} {gb} {sp}  {r.note}")
    return "\n".join(lines)


def save_json(report: Report, path: str) -> None:
    with open(path, "w") as f:
        json.dump({"family": report.family, "device": report.device, "meta": report.meta,
                   "rows": [asdict(r) for r in report.rows]}, f, indent=1)


def progress(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def bench_main(family: str, doc: str, sizes, run, argv: list[str] | None, reps: int) -> Report:
    """The command line of every `pyunlearn bench <family>`: parse, run(size, device, ...), print, save."""
    ap = argparse.ArgumentParser(prog=f"pyunlearn bench {family}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=list(sizes), default=None,
                    help="problem size (default: gpu on a CUDA device, else cpu)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer (it compiles ~1 min)")
    ap.add_argument("--reps", type=int, default=reps)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("gpu" if device.startswith("cuda") else "cpu")
    report = run(size, device, compile_peer=not args.no_compile, verbose=not args.quiet, reps=args.reps)
    print(format_table(report))
    if args.json:
        save_json(report, args.json)
    return report
