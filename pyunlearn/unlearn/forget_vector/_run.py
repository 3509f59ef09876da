"""The Forget-Vector experiment end to end: tasks (class-wise, random, multi-class / class-subset arithmetic
tasks), the UA/RA/TA/MIA table against Retrain, FT and l1-sparse, both MIA shadow variants, cached class-wise
vectors, JSON + PNG outputs, and the `pyunlearn forget-vector` sub-command."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Subset

from pyunlearn.unlearn.forget_vector._learn import (
    ForgetVector,
    ForgetVectorConfig,
    learn_coefficients,
    learn_delta,
)

BASELINES = ("retrain", "ft", "l1_sparse")
DIRECT, ARITH = "forget_vector", "fv_arithmetic"  # method names in the Results table


@dataclass
class Task:
    """A forget task: its spec, kind ("class" | "random" | "indices" | "classes" | "subset"), the ForgetSet
    and the classes it removes entirely (excluded from TA, the MIA non-member set and the validation set)."""

    spec: str
    kind: str
    fs: object  # pyunlearn.data.ForgetSet
    drop_classes: tuple[int, ...]


def _classes_list(text: str, spec: str, num_classes: int) -> tuple[int, ...]:
    toks = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if not toks or any(not re.fullmatch(r"\d+", t) for t in toks):
        raise ValueError(f"task {spec!r}: expected comma-separated class ids, got {text!r}")
    cls = tuple(sorted({int(t) for t in toks}))
    bad = [c for c in cls if c >= num_classes]
    if bad:
        raise ValueError(f"task {spec!r}: class ids must be in [0, {num_classes}), got {bad}")
    return cls


def make_task(splits, spec: str, *, seed: int = 1) -> Task:
    """A Task from a spec string (seed: the forget-set seed of random draws).

    "class:3" | "random:0.1" | "indices:1,2,3" | "indices:@FILE" (pyunlearn.data.select_forget);
    "classes:1,7" or "class:1,class:7" (every train sample of those classes: multi-class forgetting);
    "subset:0.5@1,7" (a seeded random half of the train samples of classes 1 and 7: a subset across classes)."""
    from pyunlearn.data import ForgetSet, labels_of, select_forget

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"task spec must be a non-empty str, got {spec!r}")
    text = spec.strip()
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and all(p.startswith("class:") for p in parts):  # class:1,class:7
        text = "classes:" + ",".join(p[len("class:"):] for p in parts)
    kind, sep, arg = text.partition(":")
    if kind in ("class", "random", "indices"):
        fs = select_forget(splits, text, seed=seed)
        return Task(text, fs.kind, fs, (fs.forget_class,) if fs.kind == "class" else ())
    labels = labels_of(splits.train)  # [N_train]
    if kind == "classes" and sep:
        cls = _classes_list(arg, spec, splits.num_classes)
        idx = torch.isin(labels, torch.tensor(cls)).nonzero().flatten()
        drop = cls
    elif kind == "subset" and sep and "@" in arg:
        frac_s, _, cls_s = arg.partition("@")
        try:
            frac = float(frac_s)
        except ValueError:
            raise ValueError(f"task {spec!r}: 'subset:FRACTION@c1,c2' needs a number, got {frac_s!r}") from None
        if not (math.isfinite(frac) and 0 < frac <= 1):
            raise ValueError(f"task {spec!r}: fraction must be in (0, 1], got {frac}")
        cls = _classes_list(cls_s, spec, splits.num_classes)
        pool = torch.isin(labels, torch.tensor(cls)).nonzero().flatten()
        k = round(frac * len(pool))
        if k == 0:
            raise ValueError(f"task {spec!r} selects no sample (classes {list(cls)} hold {len(pool)}): "
                             "empty forget set")
        g = torch.Generator().manual_seed(int(seed))
        idx = pool[torch.randperm(len(pool), generator=g)[:k]]
        drop = cls if k == len(pool) else ()
    else:
        raise ValueError(f"task spec must be class:C | random:FRACTION | indices:... | classes:C1,C2 | "
                         f"class:C1,class:C2 | subset:FRACTION@C1,C2, got {spec!r}")
    if len(idx) == 0:
        raise ValueError(f"task {spec!r}: empty forget set (no train sample of classes {list(cls)})")
    idx = idx.sort().values
    fs0 = select_forget(splits, "indices:" + ",".join(map(str, idx.tolist())), seed=seed)
    fs = ForgetSet(kind="indices", forget=fs0.forget, retain=fs0.retain, forget_indices=fs0.forget_indices,
                   forget_class=None, seed=seed, spec=text)
    return Task(text, kind, fs, tuple(drop))


# --------------------------------------------------------------------------------------------- evaluation
def evaluate_task(model: nn.Module, task: Task, splits, *, seed: int = 0) -> dict:
    """UA, RA, TA, MIA (first-n shadow, the published protocol, = pyunlearn.eval.evaluate for single tasks),
    MIA_random (the Forget-Vector variant of spec §2.2: seeded random shadow subsets) and, when whole classes
    are forgotten, TA_forget_class. TA and the MIA non-member set use the test samples of the kept classes.
    Pass a ForgetVector to have δ applied to every input (forget, retain, test)."""
    from pyunlearn.eval.metrics import _acc, _collect, _confidence, _err, _mia

    pf, yf = _collect(model, task.fs.forget, name="forget")
    pr, yr = _collect(model, task.fs.retain, name="retain")
    pt, yt = _collect(model, splits.test, name="test")
    out = {}
    if task.drop_classes:
        drop = torch.isin(yt, torch.tensor(task.drop_classes))
        out["TA_forget_class"] = _acc(pt[drop], yt[drop]) if bool(drop.any()) else None
        pt, yt = pt[~drop], yt[~drop]
        if len(yt) == 0:
            raise ValueError(f"task {task.spec!r}: the test set has no sample of a kept class")
    cf, cr, ct = _confidence(pf, yf), _confidence(pr, yr), _confidence(pt, yt)
    out.update(UA=_err(pf, yf), RA=_acc(pr, yr), TA=_acc(pt, yt),
               MIA=_mia(cf, cr, ct, shadow="first", seed=seed),
               MIA_random=_mia(cf, cr, ct, shadow="random", seed=seed))
    return out


def _val_for(splits, task: Task):
    """The validation set without the forgotten classes (the data forgetting must not touch)."""
    from pyunlearn.data import labels_of

    if not task.drop_classes:
        return splits.val
    keep = ~torch.isin(labels_of(splits.val), torch.tensor(task.drop_classes))
    return Subset(splits.val, keep.nonzero().flatten().tolist())


# ---------------------------------------------------------------------------------------- class-vector cache
def _digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def class_vectors(splits, model: nn.Module, config: ForgetVectorConfig, *, classes=None, out_dir=None,
                  forget_seed: int = 1, seed: int = 0, progress: bool = True, log=print) -> tuple[Tensor, dict]:
    """δ_c for every class c in `classes` (default all): [len(classes), *input_shape], and {c: FVRecord-dict}.

    With out_dir each vector is cached in out_dir/vectors/class_<c>.pt together with a fingerprint (config,
    seeds, split, model digest); a rerun with the same fingerprint loads it instead of training."""
    classes = tuple(range(splits.num_classes)) if classes is None else tuple(classes)
    fp = {"config": asdict(config), "seed": seed, "forget_seed": forget_seed, "data": splits.name,
          "split_seed": splits.split_seed, "model": _digest(model)}
    fp = json.loads(json.dumps(fp))
    vecs, records = [], {}
    for c in classes:
        path = None if out_dir is None else Path(out_dir) / "vectors" / f"class_{c}.pt"
        if path is not None and path.exists():
            saved = torch.load(path, weights_only=True, map_location="cpu")
            if saved.get("fingerprint") == fp:
                vecs.append(saved["delta"])
                records[c] = saved["record"]
                continue
        task = make_task(splits, f"class:{c}", seed=forget_seed)
        delta, rec = learn_delta(model, task.fs.forget, task.fs.retain, config, kind="class",
                                 val=_val_for(splits, task), input_shape=splits.input_shape,
                                 augment=splits.augment, seed=seed, progress=progress)
        rec_d = {"seconds": rec.seconds, "best_epoch": rec.best_epoch, "b": rec.config["b"]}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"delta": delta.detach().cpu(), "fingerprint": fp, "record": rec_d}, tmp)
            os.replace(tmp, path)
        log(f"class vector {c}: trained in {rec.seconds:.1f}s (epoch {rec.best_epoch} kept)")
        vecs.append(delta.detach().cpu())
        records[c] = rec_d
    return torch.stack(vecs), records


# ------------------------------------------------------------------------------------------------ the run
def run_forget_vectors(splits, original: nn.Module, *, tasks=("class:3",), arithmetic=(), out_dir=None,
                       config: ForgetVectorConfig | None = None, arithmetic_config: ForgetVectorConfig | None = None,
                       baselines=BASELINES, basis_classes=None, forget_seed: int = 1, seed: int = 0,
                       init_seed: int = 1, progress: bool = True, log=print):
    """Forget Vectors on `splits` with the frozen `original` model; returns pyunlearn.eval.Results.

    tasks: forget specs (make_task) each solved by a directly trained δ ("forget_vector").
    arithmetic: specs solved both by a directly trained δ and by arithmetic over the class-wise vectors
    δ_c (c in basis_classes, default every class; "fv_arithmetic"), learning only w.
    Every task also runs `baselines` (pyunlearn.unlearn methods on a copy of the model) for the table.
    config: ForgetVectorConfig of δ (b None = per-kind default); arithmetic_config: of w (default config).
    out_dir (optional): results.json (the Results), forget_vectors.json (per entry MIA_random,
    TA_forget_class, best epoch, ‖δ‖₂, coefficients), results.png, deltas.png, vectors/*.pt (class vectors
    cached for reruns, and each task's δ)."""
    from pyunlearn.eval import Results
    from pyunlearn.unlearn import METHODS, unlearn

    cfg = ForgetVectorConfig() if config is None else config
    acfg = cfg if arithmetic_config is None else arithmetic_config
    for m in baselines:
        if m not in METHODS:
            raise ValueError(f"baselines must be among {sorted(METHODS)}, got {m!r}")
    if not tasks and not arithmetic:
        raise ValueError("give at least one task or arithmetic task, got none")
    all_tasks = [(make_task(splits, s, seed=forget_seed), False) for s in tasks]
    all_tasks += [(make_task(splits, s, seed=forget_seed), True) for s in arithmetic]
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results, extras, deltas = Results(), {}, {}
    basis = None
    for task, arith in all_tasks:
        fs, name = task.fs, task.spec
        if name in results.data:
            log(f"[{name}] given twice, skipped")
            continue
        extras[name] = {}
        for method in baselines:
            model, record = unlearn(original, fs.forget, fs.retain, method, num_classes=splits.num_classes,
                                    augment=splits.augment, seed=seed, init_seed=init_seed, progress=progress)
            _add(results, extras, name, method, evaluate_task(model, task, splits, seed=seed), record.seconds, {},
                 log)
        val = _val_for(splits, task)
        if task.kind == "class":  # the class vector: shared with the arithmetic basis and its cache
            vec, recs = class_vectors(splits, original, cfg, classes=(task.drop_classes[0],), out_dir=out,
                                      forget_seed=forget_seed, seed=seed, progress=progress, log=log)
            delta, rec = vec[0], recs[task.drop_classes[0]]
            seconds = rec["seconds"]  # the training time, also when the vector came from the cache
            info = {"best_epoch": rec["best_epoch"], "b": rec["b"]}
        else:
            delta, r = learn_delta(original, fs.forget, fs.retain, cfg, kind=task.kind, val=val,
                                   input_shape=splits.input_shape, augment=splits.augment, seed=seed,
                                   progress=progress)
            seconds, info = r.seconds, {"best_epoch": r.best_epoch, "b": r.config["b"]}
        delta = delta.to(_device(original))
        deltas[f"{name} direct"] = delta.cpu()
        _add(results, extras, name, DIRECT, evaluate_task(ForgetVector(original, delta, clamp=cfg.clamp), task,
                                                          splits, seed=seed), seconds,
             info | {"delta_l2": delta.norm().item()}, log)
        if arith:
            if basis is None:
                basis, _ = class_vectors(splits, original, cfg, classes=basis_classes, out_dir=out,
                                         forget_seed=forget_seed, seed=seed, progress=progress, log=log)
            d_w, r = learn_coefficients(original, basis, fs.forget, fs.retain, acfg, kind=task.kind, val=val,
                                        augment=splits.augment, seed=seed, progress=progress)
            deltas[f"{name} arithmetic"] = d_w.cpu()
            _add(results, extras, name, ARITH, evaluate_task(ForgetVector(original, d_w, clamp=acfg.clamp), task,
                                                             splits, seed=seed), r.seconds,
                 {"best_epoch": r.best_epoch, "b": r.config["b"], "delta_l2": d_w.norm().item(),
                  "coefficients": [round(w, 6) for w in r.coefficients]}, log)
        if out is not None:
            _write(out, results, extras, deltas)
    results.finalize()
    if out is not None:
        _write(out, results, extras, deltas)
        results.plot(out / "results.png")
        plot_deltas(deltas, out / "deltas.png")
    return results


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _add(results, extras, task, method, metrics, seconds, info, log) -> None:
    results.add(task, method, metrics, seconds)
    extras[task][method] = {"MIA_random": round(metrics["MIA_random"], 4),
                            "TA_forget_class": metrics.get("TA_forget_class"), **info}
    log(f"[{task}] {method}: " + ", ".join(f"{k} {metrics[k]:.2f}" for k in ("UA", "RA", "TA", "MIA", "MIA_random"))
        + f", RTE {seconds:.1f}s")


def _write(out: Path, results, extras, deltas) -> None:
    results.to_json(out / "results.json")
    tmp = out / "forget_vectors.json.tmp"
    tmp.write_text(json.dumps(extras, indent=1))
    os.replace(tmp, out / "forget_vectors.json")
    (out / "vectors").mkdir(exist_ok=True)
    for key, d in deltas.items():
        torch.save({"delta": d, "clamp": False}, out / "vectors" / (re.sub(r"[^\w.-]+", "_", key) + ".pt"))


def plot_deltas(deltas: dict, path) -> Path:
    """One panel per δ (channel mean for multi-channel inputs), a shared symmetric colour scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not deltas:
        raise ValueError("nothing to plot: no forget vectors")
    imgs = {k: (d.mean(0) if d.dim() == 3 else d.reshape(d.shape[0], -1) if d.dim() == 2 else d.reshape(1, -1))
            for k, d in deltas.items()}
    lim = max(float(v.abs().max()) for v in imgs.values()) or 1.0
    fig = Figure(figsize=(1.8 * len(imgs) + 1.2, 2.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(imgs), squeeze=False)[0]
    im = None
    for ax, (k, v) in zip(axes, imgs.items()):
        im = ax.imshow(v.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(k, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers) -> None:
    """Add `pyunlearn forget-vector` to an argparse sub-parsers object."""
    p = subparsers.add_parser("forget-vector", help="Forget Vectors (input perturbation, model frozen) and "
                              "forget-vector arithmetic vs Retrain/FT/l1-sparse: pyunlearn forget-vector "
                              "--forget class:3 --arithmetic classes:1,7")
    p.add_argument("--forget", action="append", default=[], metavar="SPEC",
                   help="task solved by a directly learned delta: class:C | random:FRACTION | indices:... | "
                   "classes:C1,C2 | subset:FRACTION@C1,C2 (repeatable)")
    p.add_argument("--arithmetic", action="append", default=[], metavar="SPEC",
                   help="task solved by arithmetic over the class-wise vectors AND directly, compared: "
                   "class:1,class:7 | classes:1,7 | subset:0.5@1,7 | random:0.1 (repeatable)")
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help="comma-separated pyunlearn.unlearn methods in the table (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=ForgetVectorConfig.epochs)
    p.add_argument("--lr", type=float, default=ForgetVectorConfig.lr)
    p.add_argument("--a", type=float, default=ForgetVectorConfig.a, help="retain CE weight (paper alpha)")
    p.add_argument("--b", type=float, default=None, help="forget margin weight (paper beta); default per kind")
    p.add_argument("--tau", type=float, default=ForgetVectorConfig.tau)
    p.add_argument("--lam", type=float, default=ForgetVectorConfig.lam, help="weight of the norm of delta / w")
    p.add_argument("--init", default="zero", help="delta_0 / w_0: zero | random (w also: one)")
    p.add_argument("--clamp", action="store_true", help="clamp x + delta to [0, 1] (the original does not)")
    p.add_argument("--model", default="cnn", help="cnn | mlp | resnet18 | resnet20 (default: %(default)s)")
    p.add_argument("--forget-seed", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="pyunlearn_fv", help="results.json, forget_vectors.json, results.png, "
                   "deltas.png, original.pt, vectors/ (default: %(default)s)")
    p.add_argument("--data", default="digits", help="dataset (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_forget_vector)


def _fail(msg: str) -> int:
    print(f"pyunlearn forget-vector: {msg}", file=sys.stderr)
    return 2


def cmd_forget_vector(args) -> int:
    from pyunlearn.unlearn import METHODS

    if not args.forget and not args.arithmetic:
        return _fail("give at least one --forget or --arithmetic task, e.g. --forget class:3")
    baselines = tuple(m for m in args.baselines.split(",") if m)
    bad = [m for m in baselines if m not in METHODS]
    if bad:
        return _fail(f"--baselines must be among {sorted(METHODS)}, got {bad}")
    if args.data != "digits":
        return _fail(f"--data must be 'digits' (other data through the Python API), got {args.data!r}")
    try:
        cfg = ForgetVectorConfig(epochs=args.epochs, lr=args.lr, a=args.a, b=args.b, tau=args.tau, lam=args.lam,
                                 init="zero" if args.init == "one" else args.init, clamp=args.clamp)
        acfg = replace(cfg, init=args.init)
        from pyunlearn.data import load_digits

        splits = load_digits(split_seed=args.split_seed)
        for s in list(args.forget) + list(args.arithmetic):
            make_task(splits, s, seed=args.forget_seed)  # bad specs fail here, before any training
    except (ValueError, TypeError, IndexError) as e:
        return _fail(str(e))
    from pyunlearn.unlearn import harness

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exp = harness.Experiment(model=args.model)
    original = harness._original_model(splits, exp, out, not args.no_progress, print)
    results = run_forget_vectors(splits, original, tasks=tuple(args.forget), arithmetic=tuple(args.arithmetic),
                                 out_dir=out, config=cfg, arithmetic_config=acfg, baselines=baselines,
                                 forget_seed=args.forget_seed, seed=args.seed, init_seed=exp.init_seed,
                                 progress=not args.no_progress)
    print()
    print(results.table())
    print(f"\nMIA_random, TA_forget_class, coefficients: {out}/forget_vectors.json")
    print(f"written: {out}/results.json, {out}/results.png, {out}/deltas.png")
    return 0


__all__ = ["BASELINES", "Task", "add_cli", "class_vectors", "cmd_forget_vector", "evaluate_task", "make_task",
           "plot_deltas", "run_forget_vectors"]
