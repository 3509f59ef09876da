"""`pyunlearn demo | unlearn | forget-vector | worst-case | dp4tl | llm | zo | mesh | info | bench <family>`."""

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


def _parse_sets(pairs: list[str], method: str) -> dict:
    """--set key=value pairs -> {key: value} typed like the method's config field."""
    import dataclasses

    from pyunlearn.unlearn import METHODS

    fields = {f.name: f for f in dataclasses.fields(METHODS[method][0])}
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--set must be key=value, got {pair!r}")
        if key not in fields:
            raise ValueError(f"--set: method {method!r} has no option {key!r}; it takes {sorted(fields)}")
        kind = type(getattr(METHODS[method][0](), key))
        try:
            out[key] = (raw.lower() in ("1", "true", "yes")) if kind is bool else kind(raw)
        except ValueError:
            raise ValueError(f"--set {key}: expected a {kind.__name__}, got {raw!r}") from None
    return out


def _load_data(name: str, split_seed: int):
    from pyunlearn.data import load_digits

    if name != "digits":
        raise ValueError(f"--data must be 'digits' (the bundled set; bring other data through the Python API), "
                         f"got {name!r}")
    return load_digits(split_seed=split_seed)


def _run(exp, args) -> int:
    from pyunlearn.unlearn import harness

    splits = _load_data(args.data, args.split_seed)
    results = harness.run(splits, exp, args.out, progress=not args.no_progress)
    print()
    if exp.seeds > 1:
        print(f"means over {exp.seeds} seeds")
    print(results.table())
    if exp.seeds > 1:
        print()
        print(harness.spread_table(args.out))
    print(f"\nwritten: {args.out}/results.json, {args.out}/results.png")
    return 0


def cmd_demo(args) -> int:
    """Train the original CNN on digits, forget one class and a random 10% with Retrain, FT, GA, RL, l1-sparse,
    SalUn and UGradSL; print the table and write results.json and the figure."""
    from pyunlearn.unlearn.harness import DEMO_METHODS, Experiment

    methods = ("retrain", "ft", "salun") if args.quick else DEMO_METHODS
    exp = Experiment(tasks=("class:3", "random:0.1"), methods=methods, model="cnn", seeds=args.seeds)
    return _run(exp, args)


def cmd_unlearn(args) -> int:
    from pyunlearn.unlearn.harness import Experiment

    try:
        configs = {args.method: _parse_sets(args.set, args.method)} if args.method in _methods() else {}
        exp = Experiment(tasks=tuple(args.forget), methods=("retrain", args.method), model=args.model,
                         forget_seed=args.forget_seed, seed=args.seed, configs=configs,
                         prune=args.prune, seeds=args.seeds)
    except (ValueError, TypeError) as e:
        print(f"pyunlearn unlearn: {e}", file=sys.stderr)
        return 2
    return _run(exp, args)


def _methods() -> list[str]:
    from pyunlearn.unlearn import METHODS

    return sorted(METHODS)


def _common_run_args(p, seeds: int) -> None:
    p.add_argument("--seeds", type=int, default=seeds, help="repeats with other forget-set/unlearning seeds; "
                   "the table shows means, runs.json every seed (default: %(default)s)")
    p.add_argument("--out", default="pyunlearn_out", help="folder for results.json, results.png and checkpoints; "
                   "rerunning into it resumes (default: %(default)s)")
    p.add_argument("--data", default="digits", help="dataset (default: %(default)s, bundled with scikit-learn)")
    p.add_argument("--split-seed", type=int, default=0, help="the one train/val/test split (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyunlearn", description="pyunlearn: machine unlearning kernels and methods")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="what was compiled (CPU, CUDA + archs, Triton, torch) and the active backend")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("bench", help="micro-benchmarks against the best peers: "
                       "pyunlearn bench masked_optim|gat|gatv2|zo --help")
    p.add_argument("family", help="kernel family: masked_optim | gat | gatv2 | zo")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the family's own options")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("demo", help="the main job: unlearning on digits, 7 methods x (one class, random 10%%), "
                       "table + results.json + figure")
    p.add_argument("--quick", action="store_true", help="only Retrain, FT and SalUn")
    _common_run_args(p, seeds=3)
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("unlearn", help="one method against Retrain: pyunlearn unlearn --method salun --forget class:3")
    p.add_argument("--method", required=True, help="retrain | ft | ga | rl | iu | ff | l1_sparse | salun | ugradsl | "
                   "ugradsl_plus")
    p.add_argument("--forget", action="append", required=True,
                   help="forget set: class:C | random:FRACTION | indices:1,2,3 | indices:@FILE (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method option, e.g. --set lr=0.02 --set epochs=5")
    p.add_argument("--model", default="cnn", help="cnn | mlp | resnet18 | resnet20 (default: %(default)s)")
    p.add_argument("--prune", default=None, metavar="omp|imp|synflow[:RATE]",
                   help="unlearn a sparse original model (Unlearn-Sparse's prune first, then unlearn), e.g. omp:0.9")
    p.add_argument("--forget-seed", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="shuffling / random labels / noise")
    _common_run_args(p, seeds=1)
    p.set_defaults(fn=cmd_unlearn)
    from pyunlearn.mesh._cli import add_cli as mesh_cli
    from pyunlearn.transfer import add_cli as dp4tl_cli
    from pyunlearn.unlearn.forget_vector import add_cli as forget_vector_cli
    from pyunlearn.unlearn.llm.pipeline import add_cli as llm_cli
    from pyunlearn.unlearn.worst_case import add_cli as worst_case_cli
    from pyunlearn.zo._cli import add_cli as zo_cli

    for add in (forget_vector_cli, worst_case_cli, dp4tl_cli, llm_cli, zo_cli, mesh_cli):
        add(sub)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
