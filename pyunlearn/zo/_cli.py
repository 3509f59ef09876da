"""`pyunlearn zo deepzero|mezo`: the issue's real runs from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_cli(subparsers) -> None:
    """Add `pyunlearn zo ...` (deepzero, mezo) to an argparse subparsers object."""
    from pyunlearn.zo.deepzero import DeepZeroConfig
    from pyunlearn.zo.mezo import MeZOConfig

    zo = subparsers.add_parser("zo", help="zeroth-order training: DeepZero on digits, MeZO on a tiny Llama")
    sub = zo.add_subparsers(dest="zo_command", metavar="{deepzero,mezo}")
    sub.required = True
    d = DeepZeroConfig()
    p = sub.add_parser("deepzero", help="ZO-train a small CNN on digits with DeepZero's recipe and compare it "
                       "with its first-order twin (same init, epochs, optimizer, schedule)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="(default %(default)s)")
    p.add_argument("--sparsity", type=float, default=d.sparsity,
                   help="ZO-GraSP global fraction of Conv/Linear weight coordinates not queried (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="(default %(default)s)")
    p.add_argument("--mu", type=float, default=d.mu, help="CGE finite-difference step (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="(default %(default)s)")
    p.add_argument("--mask-interval", type=int, default=d.mask_interval,
                   help="epochs between random mask redraws (default %(default)s)")
    p.add_argument("--widths", default="8,16", help="the CNN's two conv widths (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default="pyunlearn_deepzero", help="folder for results.json, curves.png and the "
                   "per-run checkpoints (a rerun resumes them) (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_deepzero)
    m = MeZOConfig()
    p = sub.add_parser("mezo", help="MeZO fine-tuning of a tiny Llama (built from config, offline) on the "
                       "synthetic TOFU-like QA set")
    p.add_argument("--steps", type=int, default=m.steps, help="(default %(default)s)")
    p.add_argument("--lr", type=float, default=m.lr, help="(default %(default)s)")
    p.add_argument("--mu", type=float, default=m.mu, help="(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=m.batch_size, help="(default %(default)s)")
    p.add_argument("--seed", type=int, default=m.seed)
    p.add_argument("--out", default=None, help="optional folder for mezo.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_mezo)


def cmd_deepzero(args) -> int:
    from pyunlearn.zo.deepzero import DeepZeroConfig, compare_digits

    try:
        widths = tuple(int(w) for w in args.widths.split(","))
        if len(widths) != 2:
            raise ValueError(f"--widths must be two comma-separated ints, got {args.widths!r}")
        cfg = DeepZeroConfig(epochs=args.epochs, sparsity=args.sparsity, lr=args.lr, mu=args.mu,
                             batch_size=args.batch_size, mask_interval=args.mask_interval, seed=args.seed)
    except ValueError as e:
        print(f"pyunlearn zo deepzero: {e}", file=sys.stderr)
        return 2
    res = compare_digits(cfg, widths=widths, out_dir=args.out, progress=not args.no_progress)
    print(f"digits CNN {widths} ({res['params']} parameters), {cfg.epochs} epochs, sparsity {cfg.sparsity}")
    print(f"  first-order: test accuracy {res['fo_test_acc']:.2f}%  in {res['fo_seconds']:.1f} s")
    print(f"  DeepZero ZO: test accuracy {res['zo_test_acc']:.2f}%  in {res['zo_seconds']:.1f} s")
    print(f"  ZO / FO accuracy ratio {res['ratio']:.3f}; results in {Path(args.out) / 'results.json'}")
    return 0


def cmd_mezo(args) -> int:
    from pyunlearn.zo.mezo import MeZOConfig, demo

    try:
        cfg = MeZOConfig(steps=args.steps, lr=args.lr, mu=args.mu, batch_size=args.batch_size, seed=args.seed)
    except ValueError as e:
        print(f"pyunlearn zo mezo: {e}", file=sys.stderr)
        return 2
    res = demo(cfg, progress=not args.no_progress)
    print(f"tiny Llama ({res['params']} parameters), MeZO {cfg.steps} steps: loss {res['loss_before']:.4f} -> "
          f"{res['loss_after']:.4f} in {res['seconds']:.1f} s")
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mezo.json").write_text(json.dumps(res, indent=2))
    return 0


__all__ = ["add_cli", "cmd_deepzero", "cmd_mezo"]
