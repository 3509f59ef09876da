"""Worst-case forget-set selection, "Challenging Forgets" (ECCV 2024; image_mu.md §3.11).

A bi-level search for the forget set that is hardest to erase. Upper level: data-selection weights w in
S = {0 <= w <= 1, sum w = m}; lower level: K epochs of sign-SGD unlearning from θ_o on sum_i (1 - w_i)·ℓ_i;
upper step w <- Proj_S(w - η_w·(ℓ(θ*(w)) + 2γw)) (explicit partial only), then the m largest w_i.

    sel = select_worst_case(original, splits, size=0.1)          # data-wise, 10 % of train
    fs = select_forget(splits, f"indices:{','.join(map(str, sel.indices.tolist()))}")
    rep = compare(original, splits, sel, methods=("ft", "ga", "l1_sparse"), random_sets=3)

Deviation from the released code (spec pitfall (ii)): the upper-level per-sample losses are computed in eval mode,
without grad and without augmentation (the code uses train mode, grad enabled, augmented samples, so BatchNorm
statistics drift and the selection depends on random crops). docs/worst_case.md has the numbers on digits.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

MODES = ("worst", "easiest")


@dataclass
class WorstCaseConfig:
    """Hyper-parameters of the bi-level search. Spec defaults (CIFAR-10, ResNet-18, released code): select_epochs
    10, unlearn_steps 10, θ-lr 0.01, w-lr 0.01, γ 0, feq_to_bi 20, batch 256. Digits adaptations (each field):
    the CNN's per-sample CE after θ_o is ~1e-3 for most samples, so w moves only when η_w·Δℓ is O(1)."""

    upper_iters: int = 10  # select_epochs: 10 (code default); on digits the top-m set settles after ~5
    lower_epochs: int = 2  # unlearn_steps: 10 on CIFAR (~180 steps/epoch); digits has 10 batches per epoch
    theta_lr: float = 1e-3  # sign-SGD step; README example 1e-3 (0.01 per-coordinate sign steps wreck the 24k CNN)
    w_lr: float = 1000.0  # 0.01 on CIFAR; digits' median loss is 2e-3: 0.01 never moves w off its init
    gamma: float = 0.0  # ℓ2 on w: 0 data-wise (code default); 1e-4 class-wise ImageNet
    feq_to_bi: int = 20  # binarise w every feq_to_bi upper iterations, capped at upper_iters (code)
    batch_size: int = 128  # 256 on CIFAR; digits' train set has 1,259 images
    mode: str = "worst"  # "worst" (w -= ...) | "easiest" (w += ..., the code's re_optm ablation)

    def __post_init__(self):
        for name in ("upper_iters", "lower_epochs", "feq_to_bi", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("theta_lr", "w_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass
class Selection:
    """The selected forget set. indices: sorted int64 [m_samples] into splits.train; classes: sorted int64 [m]
    for class-wise selection, else None; w: the final (binarised) weights [N or K]; history: per upper
    iteration, the upper objective sum(w·ℓ) and how many of the top-m changed."""

    indices: Tensor
    classes: Tensor | None
    w: Tensor
    config: dict
    history: list

    def spec(self) -> str:
        """The selection as a select_forget spec (class-wise with one class: "class:c")."""
        if self.classes is not None and len(self.classes) == 1:
            return f"class:{int(self.classes[0])}"
        return "indices:" + ",".join(str(i) for i in self.indices.tolist())


# ------------------------------------------------------------------------------------------------ projection
def project_capped_simplex(a: Tensor, m: float, *, tol: float = 1e-5, max_iter: int = 100) -> Tensor:
    """Proj_S(a) = clip(a - μ, 0, 1) with μ such that sum = m, found by bisection on [min(a) - 1, max(a)]
    (spec §3.11: tolerance 1e-5 on |sum - m|, at most 100 iterations). Computed in float64."""
    a = torch.as_tensor(a)
    if a.dim() != 1 or len(a) == 0:
        raise ValueError(f"a must be a non-empty 1-D tensor, got shape {tuple(a.shape)}")
    if not 0 < m < len(a):
        raise ValueError(f"m must be in (0, {len(a)}) (the budget inside len(a)), got {m!r}")
    x = a.to(torch.float64)
    lo, hi = float(x.min()) - 1.0, float(x.max())  # sum(lo) = N >= m, sum(hi) = 0 <= m
    mu = 0.5 * (lo + hi)
    for _ in range(max_iter):
        mu = 0.5 * (lo + hi)
        s = float((x - mu).clamp(0.0, 1.0).sum())
        if abs(s - m) <= tol:
            break
        if s > m:
            lo = mu
        else:
            hi = mu
    return (x - mu).clamp(0.0, 1.0).to(a.dtype if a.is_floating_point() else torch.float32)


def top_m(w: Tensor, m: int) -> Tensor:
    """Sorted int64 indices of the m largest entries (ties: the lower index, a stable sort)."""
    order = torch.sort(w, descending=True, stable=True).indices
    return order[:m].sort().values


def _indicator(idx: Tensor, n: int) -> Tensor:
    w = torch.zeros(n, dtype=torch.float32)
    w[idx] = 1.0
    return w


# ---------------------------------------------------------------------------------------------- lower / upper
class _Indexed(Dataset):
    """(x, y, i): the lower level needs each sample's index to look up its weight."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i][:2]
        return x, y, i


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _lower(model: nn.Module, train, sample_w: Tensor, cfg: WorstCaseConfig, augment, gen: torch.Generator) -> None:
    """K epochs of sign-SGD on sum_i (1 - w_i)·CE_i (sum reduction, train mode, augmented): θ <- θ - η·sign(∇)."""
    from pyunlearn.data import make_loader

    dev = _device(model)
    keep = (1.0 - sample_w).to(dev)  # [N]
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for _ in range(cfg.lower_epochs):
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        for x, y, i in make_loader(_Indexed(train), cfg.batch_size, shuffle=True, seed=seed):
            if augment is not None:
                x = augment(x, gen)
            x, y, i = x.to(dev), y.to(dev), i.to(dev)
            loss = (keep[i] * F.cross_entropy(model(x), y, reduction="none")).sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.sub_(cfg.theta_lr * g.sign())  # exact zeros stay 0 (data-wise code)


def per_sample_losses(model: nn.Module, dataset, *, batch_size: int = 512) -> Tensor:
    """CE of every sample [N] (float32, CPU), one eval-mode no-grad pass without augmentation (pitfall (ii))."""
    from pyunlearn.data import make_loader

    dev = _device(model)
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for x, y in make_loader(dataset, batch_size, shuffle=False, seed=0):
            out.append(F.cross_entropy(model(x.to(dev)), y.to(dev), reduction="none").float().cpu())
    model.train(was)
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------- selection
def _budget(splits, size, classes, class_wise: bool) -> tuple[int, int]:
    """(m, N): the budget in samples (data-wise) or classes (class-wise) and the number of choices."""
    if class_wise:
        k = splits.num_classes
        if isinstance(classes, bool) or not isinstance(classes, int) or not 0 < classes < k:
            raise ValueError(f"classes must be an int in [1, {k}) (the number of classes to forget, fewer than "
                             f"num_classes={k}), got {classes!r}")
        return classes, k
    n = len(splits.train)
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) \
            or not 0 < size < 1:
        raise ValueError(f"size must be a fraction of the train set in (0, 1), got {size!r}")
    m = round(size * n)
    if not 0 < m < n:
        raise ValueError(f"size={size} selects {m} of {n} train samples: the forget set and the retain set must "
                         f"both be non-empty")
    return m, n


def select_worst_case(model: nn.Module, splits, *, size: float = 0.1, class_wise: bool = False,
                      classes: int = 1, config: WorstCaseConfig | None = None, seed: int = 1,
                      progress: bool = True, **overrides) -> Selection:
    """The forget set of the original model `model` (θ_o, not modified) on splits.train that is hardest (mode
    "worst") or easiest (mode "easiest") to unlearn.

    Data-wise: w over the N train samples, budget m = round(size·N). Class-wise (class_wise=True): w over the
    classes, budget `classes`; the lower level weights sample i by 1 - w_{y_i} and the upper gradient of class c
    is the mean per-sample loss over its train samples (+ 2γw_c). Init: the indicator of a random set of size m
    (torch.Generator(seed)); every upper iteration restarts the lower level from θ_o. overrides: config fields."""
    from pyunlearn.data import labels_of

    cfg = config if config is not None else WorstCaseConfig()
    if overrides:
        cfg = WorstCaseConfig(**{**asdict(cfg), **overrides})
    m, n = _budget(splits, size, classes, class_wise)
    train = splits.train
    labels = labels_of(train)  # [N_train]
    g = torch.Generator().manual_seed(int(seed))
    w = _indicator(torch.randperm(n, generator=g)[:m], n)  # [n]
    theta_o = copy.deepcopy(model.state_dict())
    work = copy.deepcopy(model)
    sign = -1.0 if cfg.mode == "worst" else 1.0
    every = min(cfg.feq_to_bi, cfg.upper_iters)
    counts = torch.bincount(labels, minlength=splits.num_classes).clamp_min(1).float() if class_wise else None
    history, chosen = [], top_m(w, m)
    bar = tqdm(range(cfg.upper_iters), desc=f"worst-case ({cfg.mode})", unit="iter", disable=not progress,
               leave=False)
    for t in bar:
        work.load_state_dict(theta_o)  # restart the lower level from θ_o
        sample_w = w[labels] if class_wise else w  # [N_train]
        _lower(work, train, sample_w, cfg, splits.augment, g)
        loss = per_sample_losses(work, train)  # [N_train]
        if class_wise:
            loss = torch.zeros(n).index_add_(0, labels, loss) / counts  # [K] mean loss per class
        objective = float((w * loss).sum() + cfg.gamma * (w * w).sum())
        w = project_capped_simplex(w + sign * cfg.w_lr * (loss + 2 * cfg.gamma * w), m)
        if (t + 1) % every == 0:
            w = _indicator(top_m(w, m), n)
        new = top_m(w, m)
        changed = m - int(torch.isin(new, chosen).sum())
        chosen = new
        history.append({"iter": t, "objective": objective, "changed": changed})
        bar.set_postfix_str(f"obj {objective:.3g}, changed {changed}")
    bar.close()
    if class_wise:
        cls = chosen
        idx = torch.isin(labels, cls).nonzero().flatten()
        return Selection(indices=idx, classes=cls, w=w, config=asdict(cfg), history=history)
    return Selection(indices=chosen, classes=None, w=w, config=asdict(cfg), history=history)


def random_selection(splits, m: int, *, class_wise: bool = False, seed: int = 0,
                     generator: torch.Generator | None = None) -> Selection:
    """A random set of the same budget (m samples, or m classes with all their samples), drawn from
    `generator` (default torch.Generator(seed))."""
    from pyunlearn.data import labels_of

    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    n = splits.num_classes if class_wise else len(splits.train)
    chosen = torch.randperm(n, generator=g)[:m].sort().values
    if class_wise:
        idx = torch.isin(labels_of(splits.train), chosen).nonzero().flatten()
        return Selection(indices=idx, classes=chosen, w=_indicator(chosen, n), config={}, history=[])
    return Selection(indices=chosen, classes=None, w=_indicator(chosen, n), config={}, history=[])


def _random_sets(splits, sel: Selection, count: int, seed: int) -> list:
    """`count` random sets of sel's budget from one generator, each different from sel and from each other
    (class-wise with few classes would otherwise repeat); fewer only if the choices run out."""
    class_wise = sel.classes is not None
    m = len(sel.classes) if class_wise else len(sel.indices)
    g = torch.Generator().manual_seed(int(seed))
    seen = {tuple((sel.classes if class_wise else sel.indices).tolist())}
    out = []
    for _ in range(100 * count):
        r = random_selection(splits, m, class_wise=class_wise, generator=g)
        key = tuple((r.classes if class_wise else r.indices).tolist())
        if key not in seen:
            seen.add(key)
            out.append(r)
            if len(out) == count:
                break
    return out


def forget_set(splits, sel: Selection):
    """The ForgetSet of a selection (one class: kind "class", so evaluate filters the test set; else "indices")."""
    from pyunlearn.data import select_forget

    return select_forget(splits, sel.spec())


# ------------------------------------------------------------------------------------------------------ report
def compare(model: nn.Module, splits, sel: Selection, *, methods=("ft", "ga", "l1_sparse"), random_sets: int = 3,
            seed: int = 0, init_seed: int = 1, progress: bool = True, log=print) -> dict:
    """Run Retrain and `methods` on the selected set and on `random_sets` random sets of the same budget;
    returns {"sets": {name: {"spec", "metrics": {method: {UA, RA, TA, MIA, avg_gap}}}}, "summary": {method:
    {"worst": gap, "random_mean", "random_sd", "random": [gaps], "harder": bool}}}."""
    from pyunlearn.eval import avg_gap, evaluate
    from pyunlearn.unlearn import METHODS, unlearn

    methods = tuple(m for m in methods if m != "retrain")
    for mth in methods:
        if mth not in METHODS:
            raise ValueError(f"methods must be among {sorted(METHODS)}, got {mth!r}")
    if not methods:
        raise ValueError("methods must name at least one method besides retrain")
    if isinstance(random_sets, bool) or not isinstance(random_sets, int) or random_sets < 1:
        raise ValueError(f"random_sets must be an int >= 1, got {random_sets!r}")
    class_wise = sel.classes is not None
    m = len(sel.classes) if class_wise else len(sel.indices)
    sets = {"worst_case": sel}
    for r, rs in enumerate(_random_sets(splits, sel, random_sets, seed=1000 + seed)):
        sets[f"random_{r}"] = rs
    out = {}
    for name, s in sets.items():
        fs = forget_set(splits, s)
        rows = {}
        for mth in ("retrain",) + methods:
            mu, _ = unlearn(model, fs.forget, fs.retain, mth, num_classes=splits.num_classes,
                            augment=splits.augment, seed=seed, init_seed=init_seed, progress=progress)
            met = {k: v for k, v in evaluate(mu, fs, splits).items() if k in ("UA", "RA", "TA", "MIA")}
            met["avg_gap"] = 0.0 if mth == "retrain" else avg_gap(met, rows["retrain"])
            rows[mth] = {k: round(float(v), 4) for k, v in met.items()}
            log(f"[{name}] {mth}: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[mth].items()))
        spec = s.spec()
        out[name] = {"spec": spec if len(spec) <= 80 else f"{len(s.indices)} indices", "metrics": rows}
    summary = {}
    for mth in methods:
        rand = [out[k]["metrics"][mth]["avg_gap"] for k in out if k != "worst_case"]
        worst = out["worst_case"]["metrics"][mth]["avg_gap"]
        mean = statistics.fmean(rand) if rand else float("nan")
        sd = statistics.pstdev(rand) if rand else float("nan")
        summary[mth] = {"worst": worst, "random_mean": round(mean, 4), "random_sd": round(sd, 4), "random": rand,
                        "harder": worst > mean}
    return {"sets": out, "summary": summary, "class_wise": class_wise, "budget": m,
            "mode": sel.config.get("mode", "worst")}


def table(report: dict) -> str:
    """The report as text: per set and method UA/RA/TA/MIA/Avg.Gap, then the gap summary."""
    keys = ("UA", "RA", "TA", "MIA", "avg_gap")
    lines = [f"{'set':<12}{'method':<11}" + "".join(f"{k:>9}" for k in keys)]
    for name, s in report["sets"].items():
        for mth, row in s["metrics"].items():
            lines.append(f"{name:<12}{mth:<11}" + "".join(f"{row[k]:9.2f}" for k in keys))
    gap = f"{report.get('mode', 'worst')} gap"
    lines += ["", f"{'method':<11}{gap:>12}{'random gap (mean ± sd)':>26}{'harder':>8}"]
    for mth, s in report["summary"].items():
        lines.append(f"{mth:<11}{s['worst']:12.2f}{s['random_mean']:17.2f} ± {s['random_sd']:5.2f}"
                     f"{'yes' if s['harder'] else 'no':>8}")
    return "\n".join(lines)


def plot(report: dict, path) -> None:
    """Bar chart: Avg. Gap to Retrain per method, worst-case set vs random sets (mean ± sd)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summ = report["summary"]
    names = list(summ)
    xs = range(len(names))
    fig = Figure(figsize=(1.6 + 1.3 * len(names), 3.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    mode = report.get("mode", "worst")
    ax.bar([x - 0.2 for x in xs], [summ[k]["worst"] for k in names], 0.4, label=f"{mode}-case set", color="C3")
    ax.bar([x + 0.2 for x in xs], [summ[k]["random_mean"] for k in names], 0.4,
           yerr=[summ[k]["random_sd"] for k in names], capsize=3, label="random sets (mean ± sd)", color="C0")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("Avg. Gap to Retrain (pp)")
    what = f"{report['budget']} classes" if report["class_wise"] else f"{report['budget']} samples"
    ax.set_title(f"{mode}-case vs random forget sets ({what})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------------------------------------- CLI
def add_cli(subparsers) -> None:
    """Add `pyunlearn worst-case` to an argparse subparsers object."""
    p = subparsers.add_parser("worst-case", help="select the hardest-to-unlearn forget set (Challenging Forgets) "
                              "and compare its Avg. Gap with random sets")
    p.add_argument("--size", type=float, default=0.1, help="data-wise budget, fraction of train (default %(default)s)")
    p.add_argument("--class-wise", action="store_true", help="select whole classes instead of samples")
    p.add_argument("--classes", type=int, default=1, help="class-wise budget in classes (default %(default)s)")
    p.add_argument("--methods", default="ft,ga,l1_sparse", help="comma-separated methods compared against "
                   "Retrain (default %(default)s)")
    p.add_argument("--random-sets", type=int, default=3, help="random sets of the same size (default %(default)s)")
    p.add_argument("--mode", default="worst", choices=MODES, help="easiest: the sign-flipped ablation")
    p.add_argument("--upper-iters", type=int, default=None)
    p.add_argument("--lower-epochs", type=int, default=None)
    p.add_argument("--theta-lr", type=float, default=None)
    p.add_argument("--w-lr", type=float, default=None)
    p.add_argument("--gamma", type=float, default=None)
    p.add_argument("--seed", type=int, default=1, help="random init of w (default %(default)s)")
    p.add_argument("--model", default="cnn", help="cnn | mlp | resnet18 | resnet20 (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", default="pyunlearn_worst_case", help="folder for worst_case_indices.txt, "
                   "worst_case.json, worst_case.png and original.pt (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_worst_case)


def cmd_worst_case(args) -> int:
    from pyunlearn.data import load_digits
    from pyunlearn.train import accuracy
    from pyunlearn.unlearn import METHODS
    from pyunlearn.unlearn.harness import Experiment, _original_model

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    overrides = {k: getattr(args, k) for k in ("upper_iters", "lower_epochs", "theta_lr", "w_lr", "gamma")
                 if getattr(args, k) is not None}
    try:
        cfg = WorstCaseConfig(mode=args.mode, **overrides)
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValueError(f"--methods must be comma-separated among {sorted(METHODS)}, got {args.methods!r}")
        if args.random_sets < 1:
            raise ValueError(f"--random-sets must be >= 1, got {args.random_sets}")
        splits = load_digits(split_seed=args.split_seed)
        _budget(splits, args.size, args.classes, args.class_wise)
        exp = Experiment(tasks=("worst-case",), methods=("retrain",) + methods, model=args.model)
    except (ValueError, TypeError) as e:
        print(f"pyunlearn worst-case: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    original = _original_model(splits, exp, out, progress, print)
    print(f"original model: test accuracy {accuracy(original, splits.test):.2f}%")
    sel = select_worst_case(original, splits, size=args.size, class_wise=args.class_wise, classes=args.classes,
                            config=cfg, seed=args.seed, progress=progress)
    what = (f"classes {sel.classes.tolist()} ({len(sel.indices)} samples)" if sel.classes is not None
            else f"{len(sel.indices)} samples")
    print(f"selected ({cfg.mode}): {what}")
    (out / "worst_case_indices.txt").write_text(
        f"# {cfg.mode}-case forget set, train indices of digits split_seed {args.split_seed}\n"
        + "\n".join(str(i) for i in sel.indices.tolist()) + "\n")
    report = compare(original, splits, sel, methods=methods, random_sets=args.random_sets, progress=progress)
    report["config"] = sel.config
    report["history"] = sel.history
    report["classes"] = None if sel.classes is None else sel.classes.tolist()
    (out / "worst_case.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "worst_case.png")
    print()
    print(table(report))
    print(f"\nwritten: {out}/worst_case_indices.txt (use: pyunlearn unlearn --forget indices:@{out}/"
          f"worst_case_indices.txt), {out}/worst_case.json, {out}/worst_case.png")
    return 0


__all__ = ["MODES", "Selection", "WorstCaseConfig", "add_cli", "compare", "forget_set", "per_sample_losses",
           "plot", "project_capped_simplex", "random_selection", "select_worst_case", "table", "top_m"]
