"""`pyunlearn info | bench <family> | demo`."""

from __future__ import annotations

import argparse
import json
import sys

import torch


def cmd_info(args) -> int:
    import pyunlearn

    info = pyunlearn.build_info()
    info["available_backends"] = pyunlearn.available_backends()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"pyunlearn {pyunlearn.__version__}")
    print(f"  compiled against torch {info['torch_version']}; running torch {info['runtime_torch']}")
    print(f"  CPU kernels      : yes (OpenMP: {'yes' if info['openmp'] else 'no'})")
    archs = f" (archs {info['cuda_archs']})" if info["cuda_archs"] else ""
    print(f"  CUDA kernels     : {'yes' + archs if info['cuda'] else 'no'}")
    print(f"  Triton           : {info['triton'] or 'not installed'}")
    print(f"  GPU              : {info['cuda_device'] or 'none'}")
    print(f"  backends here    : {', '.join(info['available_backends'])}")
    print(f"  active backend   : {info['backend']}")
    print(f"  ops              : {', '.join(info['ops'])}")
    return 0


def cmd_bench(args) -> int:
    from pyunlearn.bench import FAMILIES

    if args.family not in FAMILIES:
        print(f"pyunlearn bench: family must be one of {', '.join(FAMILIES)}, got {args.family!r}", file=sys.stderr)
        return 2
    import importlib

    importlib.import_module(f"pyunlearn.bench.{args.family}").main(args.rest)
    return 0


def cmd_demo(args) -> int:
    """Until the unlearning harness lands: the masked-optimizer benchmark at CPU size, with its table."""
    import pyunlearn
    from pyunlearn.bench import masked_optim
    from pyunlearn.bench._common import format_table, save_json

    cmd_info(argparse.Namespace(json=False))
    print()
    size = "tiny" if args.quick else ("gpu" if torch.cuda.is_available() else "cpu")
    print(f"pyunlearn demo: masked AdamW step, {size} size, against torch.optim and torch.compile "
          f"(correctness is checked before timing)\n", flush=True)
    report = masked_optim.run(size, compile_peer=not args.no_compile, verbose=True, reps=args.reps)
    print(format_table(report))
    if args.json:
        save_json(report, args.json)
        print(f"\nrows written to {args.json}")
    print(f"\nbackend: {pyunlearn.get_backend()}; the index-list rows touch only the selected entries.")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyunlearn", description="pyunlearn: machine unlearning kernels and methods")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="what was compiled (CPU, CUDA + archs, Triton, torch) and the active backend")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("bench", help="micro-benchmarks against the best peers: pyunlearn bench masked_optim|gat --help")
    p.add_argument("family", help="kernel family: masked_optim | gat")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the family's own options")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("demo", help="the main job on bundled data (for now: the masked-optimizer benchmark)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", default=None, help="write the rows to this JSON file")
    p.set_defaults(fn=cmd_demo)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
