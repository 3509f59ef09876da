"""`pyunlearn dp4tl`: the DP4TL pipeline on rotated digits -> upright digits; table + results.json + figure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _fraction(raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {raw!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {raw!r}")
    return v


def cmd_dp4tl(args) -> int:
    from pyunlearn.train import TrainConfig
    from pyunlearn.transfer._pipeline import DP4TLConfig, run_dp4tl

    try:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        cfg = DP4TLConfig(keeps=tuple(args.keep or (0.1, 0.25, 0.5, 0.75)),
                          scores=tuple(dict.fromkeys(args.score or ("lm", "fm", "random"))),
                          reverse=args.reverse, finetune=args.finetune, seed=args.seed, split_seed=args.split_seed,
                          pretrain=TrainConfig(epochs=args.epochs))
    except (ValueError, TypeError) as e:
        print(f"pyunlearn dp4tl: {e}", file=sys.stderr)
        return 2
    results = run_dp4tl(cfg, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_json(out / "results.json")
    results.plot(out / "results.png")
    m = results.meta
    print(f"\nDP4TL on {m['task']}: {m['num_source_classes']} source classes ({len(m['relevant'])} relevant), "
          f"{m['target_train']} target train / {m['target_test']} test images, {m['finetune']} fine-tune; "
          f"surrogate {m['surrogate_s']:.1f} s, source test acc {m['surrogate_source_acc']:.1f} %")
    print(results.table())
    print(f"\nwritten: {out}/results.json, {out}/results.png")
    return 0


def add_cli(subparsers) -> None:
    """Add the `dp4tl` sub-command to an argparse sub-parsers object (fn(args) -> exit code)."""
    p = subparsers.add_parser("dp4tl", help="DP4TL source-class pruning for transfer learning (LM / FM scores): "
                              "rotated digits -> upright digits, accuracy vs classes kept + pretraining speed-up")
    p.add_argument("--score", action="append", choices=("lm", "fm", "random"),
                   help="class score, repeatable (default: lm, fm and random)")
    p.add_argument("--keep", action="append", type=_fraction, metavar="FRACTION",
                   help="fraction of source classes kept, in (0, 1], repeatable (default: 0.1, 0.25, 0.5, 0.75)")
    p.add_argument("--finetune", choices=("linear", "full"), default="linear",
                   help="linear probe on frozen features or full fine-tune (default: %(default)s)")
    p.add_argument("--reverse", action="store_true", help="keep the bottom-scored classes (ablation)")
    p.add_argument("--epochs", type=int, default=30, help="pretraining epochs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="init / shuffling seed (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=0, help="the digits split (default: %(default)s)")
    p.add_argument("--out", default="pyunlearn_dp4tl", help="folder for results.json and results.png "
                   "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_dp4tl)
