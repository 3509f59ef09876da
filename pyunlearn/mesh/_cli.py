"""`pyunlearn mesh generate|train|move|eval`: UM2N from the command line.

    pyunlearn mesh generate --out data/train --n-samples 100 --n 20
    pyunlearn mesh train --data data/train --val data/val --out runs/um2n
    pyunlearn mesh move --model runs/um2n/model.pt --mesh 30 --problem-seed 7 --out moved/
    pyunlearn mesh eval --model runs/um2n/model.pt --data data/test --out eval/
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np


def add_cli(subparsers) -> None:
    """Add `pyunlearn mesh` (with generate, train, move, eval) to an argparse subparsers object."""
    mesh = subparsers.add_parser("mesh", help="UM2N mesh movement: generate MA data, train, move a mesh, "
                                 "evaluate")
    sub = mesh.add_subparsers(dest="mesh_command", metavar="{generate,train,move,eval}")
    sub.required = True

    p = sub.add_parser("generate", help="Helmholtz problems and their Monge–Ampère target meshes "
                       "(.npz, cached)")
    p.add_argument("--out", required=True, help="folder for the samples")
    p.add_argument("--n-samples", type=int, default=20, help="samples (default %(default)s)")
    p.add_argument("--n", type=int, default=20, help="intervals per side of the unit square "
                   "(default %(default)s)")
    p.add_argument("--kind", default="structured", choices=("structured", "perturbed", "unstructured"))
    p.add_argument("--seed", type=int, default=0, help="problem / mesh seed (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("train", help="train UM2N on generated samples (checkpointed; a rerun resumes)")
    p.add_argument("--data", required=True, nargs="+", help="folder(s) of training samples (pyunlearn mesh "
                   "generate), e.g. a 15×15 and a 20×20 set")
    p.add_argument("--val", default=None, nargs="+", help="folder(s) of validation samples (optional)")
    p.add_argument("--out", default="pyunlearn_um2n", help="checkpoint.pt, train_log.jsonl, model.pt, "
                   "loss.png (default %(default)s)")
    p.add_argument("--size", default="release", choices=("release", "small"),
                   help="release: M2N_T widths; small: a narrow model for CPU runs")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=666)
    p.add_argument("--w-coord", type=float, default=0.0, help="coordinate-loss weight (release: 0)")
    p.add_argument("--w-vol", type=float, default=1.0, help="element-area loss weight (release: 1)")
    p.add_argument("--w-chamfer", type=float, default=1.0, help="Chamfer loss weight (release: 1)")
    p.add_argument("--attention", default="selu", choices=("selu", "leaky_relu"))
    p.add_argument("--boundary", default="slide", choices=("slide", "fixed"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("move", help="move one mesh with a trained model (+ MA for comparison)")
    p.add_argument("--model", required=True, help="model.pt or checkpoint.pt of `mesh train`")
    p.add_argument("--mesh", required=True, help="N (an N×N unit-square mesh) or an .npz with points, cells")
    p.add_argument("--kind", default="structured", choices=("structured", "perturbed", "unstructured"),
                   help="for --mesh N (default %(default)s)")
    p.add_argument("--mesh-seed", type=int, default=0, help="for perturbed / unstructured meshes")
    p.add_argument("--problem-seed", type=int, default=0, help="random Helmholtz problem (B5)")
    p.add_argument("--no-ma", action="store_true", help="skip the Monge–Ampère comparison")
    p.add_argument("--out", default="pyunlearn_um2n_move", help="moved.npz and movement.png "
                   "(default %(default)s)")
    p.set_defaults(fn=cmd_move)

    p = sub.add_parser("eval", help="tangled cells, ER of UM2N vs MA, time, over a test set")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, nargs="+", help="folder(s) of test samples")
    p.add_argument("--out", default="pyunlearn_um2n_eval", help="results.json, movement.png "
                   "(default %(default)s)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_eval)


def _fail(cmd: str, e: Exception) -> int:
    print(f"pyunlearn mesh {cmd}: {e}", file=sys.stderr)
    return 2


def cmd_generate(args) -> int:
    from pyunlearn.mesh.dataset import generate_dataset

    if args.n_samples < 1 or args.n < 1:
        return _fail("generate", ValueError(f"--n-samples and --n must be >= 1, got {args.n_samples}, "
                                            f"{args.n}"))
    try:
        out = generate_dataset(args.out, args.n_samples, n=args.n, kind=args.kind, seed=args.seed,
                               workers=args.workers, progress=not args.no_progress)
    except (ValueError, TypeError) as e:
        return _fail("generate", e)
    print(f"{args.n_samples} samples in {out}")
    return 0


def _load_dirs(folders: list[str], what: str) -> list[dict]:
    from pyunlearn.mesh.dataset import load_dataset

    samples = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise ValueError(f"--{what} {folder!r} is not a folder")
        try:
            samples += load_dataset(folder)
        except FileNotFoundError as e:
            raise ValueError(f"--{what} {folder!r}: {e} (run `pyunlearn mesh generate --out "
                             f"{folder}`)") from None
    return samples


def cmd_train(args) -> int:
    import torch

    from pyunlearn.mesh.losses import LossConfig
    from pyunlearn.mesh.model import UM2NConfig
    from pyunlearn.mesh.plots import plot_history
    from pyunlearn.mesh.train import TrainConfig, train_um2n

    try:
        train = _load_dirs(args.data, "data")
        val = _load_dirs(args.val, "val") if args.val else None
        make = UM2NConfig.small if args.size == "small" else UM2NConfig
        model_cfg = make(attention=args.attention, boundary=args.boundary)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, seed=args.seed,
                          loss=LossConfig(w_coord=args.w_coord, w_vol=args.w_vol, w_chamfer=args.w_chamfer))
        device = torch.device(args.device)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as e:
        return _fail("train", e)
    try:
        res = train_um2n(train, model_config=model_cfg, config=cfg, out=args.out, val=val, device=device,
                         progress=not args.no_progress)
    except ValueError as e:  # e.g. a checkpoint of a different run in --out
        return _fail("train", e)
    plot_history(res.history, Path(args.out) / "loss.png")
    last = res.history[-1]
    extra = f", val loss {last['val_loss']:.4g}" if "val_loss" in last else ""
    print(f"trained {last['epoch']} epochs on {len(train)} samples: loss {last['loss']:.4g}{extra}, "
          f"tangled {last.get('tangled', 'n/a')}; model in {Path(args.out) / 'model.pt'}")
    return 0


def _mesh_arg(args):
    from pyunlearn.mesh.geometry import Mesh, unit_square

    spec = args.mesh
    if spec.isdigit():
        return unit_square(int(spec), args.kind, seed=args.mesh_seed)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--mesh must be an integer N or an existing .npz file, got {spec!r}")
    with np.load(path) as z:
        if "points" not in z or "cells" not in z:
            raise ValueError(f"--mesh {spec!r} must hold arrays 'points' [P, 2] and 'cells' [T, 3], got "
                             f"{sorted(z.files)}")
        return Mesh(z["points"], z["cells"])


def cmd_move(args) -> int:
    from pyunlearn.mesh.geometry import tangled_cells
    from pyunlearn.mesh.metrics import compare_errors
    from pyunlearn.mesh.model import load_model
    from pyunlearn.mesh.monitor import HelmholtzMonitor
    from pyunlearn.mesh.plots import plot_meshes
    from pyunlearn.mesh.problems import random_problem
    from pyunlearn.mesh.train import forward_ms, move_mesh

    try:
        model = load_model(args.model)
        mesh = _mesh_arg(args)
    except (ValueError, FileNotFoundError) as e:
        return _fail("move", e)
    problem = random_problem(np.random.default_rng(args.problem_seed))
    monitor = HelmholtzMonitor(problem, mesh)(mesh.points)
    moved = move_mesh(model, mesh, monitor)
    from pyunlearn.mesh.model import sample_from_mesh

    ms = forward_ms(model, sample_from_mesh(mesh, monitor))
    rep = compare_errors(mesh, moved, problem)
    panels = {"original": mesh.points}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"points": mesh.points, "cells": mesh.cells, "moved": moved, "monitor": monitor,
              **problem.to_arrays()}
    line = f"UM2N: {rep.tangled} tangled cells, ER {rep.er:.2f} %, forward {ms:.2f} ms"
    if not args.no_ma:
        from pyunlearn.mesh.monge_ampere import MongeAmpereError, monge_ampere

        try:
            ma = monge_ampere(mesh, HelmholtzMonitor(problem, mesh))
            ma_rep = compare_errors(mesh, ma.points, problem)
            panels["MA"] = arrays["ma_points"] = ma.points
            line += f"; MA: ER {ma_rep.er:.2f} %, {1e3 * ma.seconds:.0f} ms ({ma.iterations} iterations)"
        except MongeAmpereError as e:
            line += f"; MA failed ({e.reason})"
    panels["UM2N"] = moved
    np.savez(out / "moved.npz", **arrays)
    plot_meshes(mesh, panels, problem, out / "movement.png",
                title=f"{mesh.n_points} vertices, problem seed {args.problem_seed}")
    print(f"{line}\nwrote {out / 'moved.npz'} and {out / 'movement.png'}")
    return 0 if tangled_cells(mesh, moved) == 0 else 1


def cmd_eval(args) -> int:
    from pyunlearn.mesh.geometry import Mesh
    from pyunlearn.mesh.model import load_model
    from pyunlearn.mesh.plots import plot_meshes
    from pyunlearn.mesh.problems import HelmholtzProblem
    from pyunlearn.mesh.train import evaluate, format_table, move_points

    try:
        model = load_model(args.model)
        samples = _load_dirs(args.data, "data")
    except (ValueError, FileNotFoundError) as e:
        return _fail("eval", e)
    result = evaluate(model, samples, progress=not args.no_progress)
    print(format_table(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(result, default=float).replace("NaN", "null"))
    (out / "results.json").write_text(json.dumps(clean, indent=1))
    s = samples[0]
    mesh = Mesh(s["points"], s["cells"])
    plot_meshes(mesh, {"original": mesh.points, "MA": s["target"], "UM2N": move_points(model, s)},
                HelmholtzProblem.from_arrays(s), out / "movement.png", title="test sample 0")
    print(f"wrote {out / 'results.json'} and {out / 'movement.png'}")
    return 0 if result["summary"]["tangled_total"] == 0 and not math.isnan(
        result["summary"]["er_um2n_mean"]) else 1
