"""Forget Vectors (spec image_mu.md §3.14): one input-shaped perturbation δ added to every input of a FROZEN
model, learned so that forget samples are misclassified and retain samples are not; and forget-vector
arithmetic, δ(w) = Σ_k w_k δ_k over class-wise vectors with only w ∈ R^K learned.

The model is never modified: it runs in eval mode (BatchNorm uses its running statistics) with every parameter's
requires_grad off during training (both restored afterwards), and only δ (or w) is handed to the optimiser."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

INITS = ("zero", "random")  # δ₀ (spec: --init_delta 0 | random)
W_INITS = ("zero", "one", "random")  # w₀ of the arithmetic (spec: w₀ ∈ {0, 1, N(0, I)})
SELECTS = ("best", "last")
# b (the forget-loss weight) per forget kind, tuned on digits (docs/forget_vectors.md): the spec's CIFAR-10
# class-wise runs use b ∈ {3..10}; random ("data-wise") forgetting has no published b, ours is measured.
# Random-like tasks (a partial subset of classes) use a small b: Retrain keeps classifying such samples almost
# as well as unseen test data, and one input-agnostic δ cannot separate them from their retained neighbours.
DEFAULT_B = {"class": 5.0, "classes": 5.0, "random": 0.5, "subset": 0.5, "indices": 0.5}


@dataclass
class ForgetVectorConfig:
    """Hyper-parameters of learning δ (or the arithmetic coefficients w). Sources: spec §3.14 [C] unless said."""

    epochs: int = 40  # spec: unlearn_epochs + 1 (60-190 kept on CIFAR-10); digits converges in < 40 (docs)
    lr: float = 0.2  # spec: lr 0.2 in the result paths (argparse default 0.01 is not the paper setting)
    momentum: float = 0.9  # spec: SGD momentum 0.9
    weight_decay: float = 5e-4  # spec: SGD weight decay 5e-4 (an extra l2 on δ / w)
    gamma: float = 0.9  # spec: ExponentialLR(0.9), stepped once per epoch (--schedule 1)
    batch_size: int = 256  # spec: |B| = 256 mixed forget + retain samples
    tau: float = 1.0  # spec: τ = 1, the margin the true logit is pushed below the runner-up
    a: float = 1.0  # spec: a (paper α) = 1, weight of the retain CE
    b: float | None = None  # spec: b (paper β) per task, CIFAR class-wise 3..10; None = DEFAULT_B[kind]
    lam: float = 1.0  # spec: λ = 1, weight of ‖δ‖₂/|B| (arithmetic: of ‖w‖₂)
    init: str = "zero"  # spec: δ₀ = 0 ("zero") or N(0, I) ("random"); arithmetic w₀ also "one"
    clamp: bool = False  # spec pitfall (iv): the original never clamps x + δ to [0, 1]; True clamps it
    augment: bool = True  # spec: the training forget/retain sets use the train augmentation
    select: str = "best"  # "best": the epoch with the highest selection score (see learn_delta); "last"

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "tau", "a", "lam"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr == 0 or self.gamma == 0:
            raise ValueError(f"lr and gamma must be > 0, got lr={self.lr!r}, gamma={self.gamma!r}")
        if self.b is not None and (isinstance(self.b, bool) or not isinstance(self.b, Real)
                                   or not math.isfinite(self.b) or self.b < 0):
            raise ValueError(f"b must be None (per-task default) or a finite number >= 0, got {self.b!r}")
        if self.init not in W_INITS:
            raise ValueError(f"init must be one of {W_INITS} ('one' only for arithmetic), got {self.init!r}")
        if self.select not in SELECTS:
            raise ValueError(f"select must be one of {SELECTS}, got {self.select!r}")

    def resolved_b(self, kind: str) -> float:
        """b, or the per-kind default DEFAULT_B[kind] when b is None."""
        if self.b is not None:
            return float(self.b)
        if kind not in DEFAULT_B:
            raise ValueError(f"no default b for forget kind {kind!r}; pass b= (known kinds {sorted(DEFAULT_B)})")
        return DEFAULT_B[kind]


@dataclass
class FVRecord:
    """What learn_delta / learn_coefficients did: the config, seconds, the kept epoch and per-epoch history."""

    config: dict
    seconds: float
    best_epoch: int  # 1-based; the epoch whose δ was kept
    history: list = field(default_factory=list)  # [{"epoch", "loss", "forget_acc", "val_acc", "score"}]
    coefficients: list | None = None  # the arithmetic's w (learn_coefficients only)


class ForgetVector(nn.Module):
    """`model` with a fixed input perturbation: forward(x) = model(x + δ) (clamped to [0, 1] if clamp).

    δ is a buffer (saved in state_dict, moved by .to(), never a parameter). The wrapped model is shared, not
    copied, and kept in eval mode whatever .train() says: the model is frozen, only the input moves."""

    def __init__(self, model: nn.Module, delta: Tensor, *, clamp: bool = False):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(delta, Tensor) or not delta.is_floating_point():
            raise TypeError(f"delta must be a floating-point Tensor, got {type(delta).__name__}")
        self.model = model
        self.register_buffer("delta", delta.detach().clone())  # [*input_shape]
        self.clamp = bool(clamp)
        self.model.eval()

    def train(self, mode: bool = True):
        self.training = bool(mode)
        self.model.eval()  # frozen: BatchNorm keeps its running statistics
        return self

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != tuple(self.delta.shape):
            raise ValueError(f"x must be a batch of inputs of shape [B, {', '.join(map(str, self.delta.shape))}] "
                             f"(the shape of delta), got {tuple(x.shape)}")
        x = x + self.delta.to(x.dtype)
        return self.model(x.clamp(0, 1) if self.clamp else x)

    def save(self, path) -> None:
        """Save δ and clamp (not the model): {"delta": Tensor, "clamp": bool}."""
        torch.save({"delta": self.delta.detach().cpu(), "clamp": self.clamp}, path)

    @classmethod
    def load(cls, model: nn.Module, path) -> ForgetVector:
        """A ForgetVector around `model` with the δ saved at `path` by `save`."""
        state = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(state, dict) or "delta" not in state:
            raise ValueError(f"{path} does not hold a saved forget vector (a dict with 'delta')")
        return cls(model, state["delta"].to(_device_of(model)), clamp=bool(state.get("clamp", False)))


# ------------------------------------------------------------------------------------------------- helpers
def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@contextmanager
def _frozen(model: nn.Module):
    """eval() + requires_grad off on every parameter for the duration; both restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, rg in grads:
            p.requires_grad_(rg)


def _materialize(dataset, name: str) -> tuple[Tensor, Tensor]:
    """x [N, *shape] float32, y [N] int64 of a map-style dataset of (x, y), on CPU."""
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"{name} must be a map-style dataset of (x, y), got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{name} must not be empty, got a dataset of length 0")
    xs, ys = [], []
    for x, y in DataLoader(dataset, batch_size=1024, shuffle=False, num_workers=0):
        xs.append(x.float())
        ys.append(torch.as_tensor(y).reshape(-1).long())
    return torch.cat(xs), torch.cat(ys)


def _margin_loss_terms(z: Tensor, y: Tensor, is_forget: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Σ_forget max(m_i, −τ) and Σ_retain CE_i (both un-normalised). z: [B, K], y: [B], is_forget: [B] bool."""
    true = z.gather(1, y[:, None]).squeeze(1)  # [B]
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)  # [B]
    margin = (true - other).clamp(min=-tau)  # [B]; max(m, −τ)
    ce = F.cross_entropy(z, y, reduction="none")  # [B]
    return (margin * is_forget).sum(), (ce * ~is_forget).sum()


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, delta: Tensor, clamp: bool) -> float:
    if len(y) == 0:
        return float("nan")
    correct = 0
    for i in range(0, len(y), 1024):
        xb = x[i:i + 1024] + delta
        correct += (model(xb.clamp(0, 1) if clamp else xb).argmax(1) == y[i:i + 1024]).sum().item()
    return 100.0 * correct / len(y)


def _check_model_input(model, input_shape, forget, retain):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    xf, yf = _materialize(forget, "forget")
    xr, yr = _materialize(retain, "retain")
    if input_shape is not None and tuple(xf.shape[1:]) != tuple(input_shape):
        raise ValueError(f"forget inputs must have shape {tuple(input_shape)} (input_shape), "
                         f"got {tuple(xf.shape[1:])}")
    if xr.shape[1:] != xf.shape[1:]:
        raise ValueError(f"retain inputs must have the forget inputs' shape {tuple(xf.shape[1:])}, "
                         f"got {tuple(xr.shape[1:])}")
    return xf, yf, xr, yr


def _optimise(model, variable: Tensor, make_delta, penalty, xf, yf, xr, yr, val, cfg: ForgetVectorConfig,
              b: float, augment, seed: int, progress: bool, desc: str) -> tuple[Tensor, FVRecord]:
    """The shared loop of learn_delta and learn_coefficients: SGD on `variable` only, δ = make_delta(variable)."""
    t0 = time.perf_counter()
    device = _device_of(model)
    x = torch.cat([xf, xr]).to(device)  # [N, *shape]: D_f ∪ D_r
    y = torch.cat([yf, yr]).to(device)  # [N]
    is_forget = torch.cat([torch.ones(len(yf), dtype=torch.bool), torch.zeros(len(yr), dtype=torch.bool)])
    is_forget = is_forget.to(device)  # [N]; the source flag (spec: s_i = 0 forget)
    xf_d, yf_d = xf.to(device), yf.to(device)
    xv, yv = (None, None) if val is None else (val[0].to(device), val[1].to(device))
    opt = torch.optim.SGD([variable], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)
    shuffle = torch.Generator().manual_seed(int(seed))
    aug_gen = torch.Generator().manual_seed(int(seed) + 1)
    best, best_score, history = None, -math.inf, []
    with _frozen(model):
        bar = tqdm(range(cfg.epochs), desc=desc, unit="ep", leave=False, disable=not progress)
        for epoch in bar:
            total, steps = 0.0, 0
            for idx in torch.randperm(len(y), generator=shuffle).split(cfg.batch_size):
                idx = idx.to(device)
                xb, yb, fb = x[idx], y[idx], is_forget[idx]
                if augment is not None:
                    xb = augment(xb, aug_gen)
                delta = make_delta(variable)
                xb = xb + delta
                z = model(xb.clamp(0, 1) if cfg.clamp else xb)  # [B, K]
                lf, lr_ = _margin_loss_terms(z, yb, fb, cfg.tau)
                loss = (cfg.a * lr_ + b * lf) / len(idx) + cfg.lam * penalty(variable, len(idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
            sched.step()
            with torch.no_grad():
                delta = make_delta(variable)
                facc = _accuracy(model, xf_d, yf_d, delta, cfg.clamp)
                vacc = _accuracy(model, xv, yv, delta, cfg.clamp) if xv is not None else float("nan")
            # Selection score: forget error on D_f + accuracy on held-out validation data of the retained part.
            score = (100.0 - facc) + (0.0 if xv is None else vacc)
            history.append({"epoch": epoch + 1, "loss": total / steps, "forget_acc": facc, "val_acc": vacc,
                            "score": score})
            if progress:
                bar.set_postfix_str(f"loss {total / steps:.3f} forget {facc:.1f}% val {vacc:.1f}%", refresh=False)
            if cfg.select == "last" or score > best_score:
                best, best_score = (epoch + 1, variable.detach().clone()), score
        bar.close()
    record = FVRecord(config=asdict(cfg) | {"b": b}, seconds=time.perf_counter() - t0, best_epoch=best[0],
                      history=history)
    return best[1], record


# ---------------------------------------------------------------------------------------------- public API
def learn_delta(model: nn.Module, forget, retain, config: ForgetVectorConfig | None = None, *, kind: str = "class",
                val=None, input_shape=None, augment=None, seed: int = 0, progress: bool = True,
                ) -> tuple[Tensor, FVRecord]:
    """Learn a forget vector δ [*input_shape] for `model` (frozen) on D_f = forget, D_r = retain.

    Minimises a·ℓ_r + b·ℓ_f + λ·ℓ_δ over mixed shuffled batches of D_f ∪ D_r (spec §3.14):
    ℓ_f = (1/|B|) Σ_forget max(m_i, −τ) with m = z_y − max_{k≠y} z_k, ℓ_r = (1/|B|) Σ_retain CE,
    ℓ_δ = ‖δ‖₂/|B|; SGD(lr, momentum, weight_decay) on δ, ExponentialLR(gamma) per epoch.
    kind picks b's default (config.b None): "class" | "classes" | "random" | "subset" | "indices".
    val: an optional dataset of (x, y) the forgetting should NOT touch (the validation set, without the
    forgotten classes for class-wise tasks). Model selection (config.select == "best"): after each epoch
    score = (100 − Acc(D_f + δ)) + Acc(val + δ) and the δ of the highest score is kept (the first on ties;
    without val, the forget error alone). augment: the batch augmentation (x, generator) -> x, applied to
    the clean inputs before δ is added (config.augment False ignores it). Returns (δ, FVRecord)."""
    cfg = ForgetVectorConfig() if config is None else config
    if not isinstance(cfg, ForgetVectorConfig):
        raise TypeError(f"config must be a ForgetVectorConfig, got {type(cfg).__name__}")
    if cfg.init == "one":
        raise ValueError("init='one' is only for the arithmetic coefficients; δ₀ must be 'zero' or 'random'")
    b = cfg.resolved_b(kind)
    xf, yf, xr, yr = _check_model_input(model, input_shape, forget, retain)
    valt = None if val is None else _materialize(val, "val")
    device = _device_of(model)
    g = torch.Generator().manual_seed(int(seed) + 2)
    delta = (torch.randn(xf.shape[1:], generator=g) if cfg.init == "random" else torch.zeros(xf.shape[1:]))
    delta = delta.to(device).requires_grad_(True)  # [*input_shape]
    best, record = _optimise(model, delta, lambda d: d, lambda d, n: d.norm() / n, xf, yf, xr, yr, valt, cfg, b,
                             augment if cfg.augment else None, seed, progress, "forget vector")
    return best, record


def learn_coefficients(model: nn.Module, vectors: Tensor, forget, retain, config: ForgetVectorConfig | None = None,
                       *, kind: str = "classes", val=None, augment=None, seed: int = 0, progress: bool = True,
                       ) -> tuple[Tensor, FVRecord]:
    """Forget-vector arithmetic: learn w ∈ R^K so that δ(w) = Σ_k w_k vectors[k] forgets `forget`.

    vectors: [K, *input_shape] (e.g. the class-wise δ_0..δ_{K-1}). Same loss and loop as learn_delta with
    ℓ_δ replaced by ‖w‖₂ (not divided by |B|, spec §3.14); w₀ = config.init ("zero" | "one" | "random").
    Returns (δ(w) [*input_shape], FVRecord with .coefficients = w as a list)."""
    cfg = ForgetVectorConfig() if config is None else config
    if not isinstance(cfg, ForgetVectorConfig):
        raise TypeError(f"config must be a ForgetVectorConfig, got {type(cfg).__name__}")
    if not isinstance(vectors, Tensor) or vectors.dim() < 2 or len(vectors) == 0:
        raise ValueError(f"vectors must be a Tensor [K, *input_shape] with K >= 1, "
                         f"got {tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__}")
    b = cfg.resolved_b(kind)
    xf, yf, xr, yr = _check_model_input(model, tuple(vectors.shape[1:]), forget, retain)
    valt = None if val is None else _materialize(val, "val")
    device = _device_of(model)
    basis = vectors.detach().to(device, torch.float32)  # [K, *shape]
    k = len(basis)
    g = torch.Generator().manual_seed(int(seed) + 2)
    w0 = {"zero": torch.zeros(k), "one": torch.ones(k), "random": torch.randn(k, generator=g)}[cfg.init]
    w = w0.to(device).requires_grad_(True)  # [K]

    def combine(v: Tensor) -> Tensor:
        return torch.tensordot(v, basis, dims=1)  # [*shape]

    best_w, record = _optimise(model, w, combine, lambda v, n: v.norm(), xf, yf, xr, yr, valt, cfg, b,
                               augment if cfg.augment else None, seed, progress, "forget-vector arithmetic")
    record.coefficients = best_w.cpu().tolist()
    with torch.no_grad():
        return combine(best_w), record


def wrap(model: nn.Module, delta: Tensor, *, clamp: bool = False) -> ForgetVector:
    """ForgetVector(model, delta, clamp=clamp): the model to evaluate (δ applied to every input)."""
    return ForgetVector(model, delta, clamp=clamp)


__all__ = [
    "DEFAULT_B",
    "FVRecord",
    "ForgetVector",
    "ForgetVectorConfig",
    "learn_coefficients",
    "learn_delta",
    "wrap",
]
