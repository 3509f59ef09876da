"""Zeroth-order optimizers (spec A3, ZO-Bench update rules): ZOSGD (ZO-SGD / ZO-SGD-MMT), ZOSGDSign, ZOSGDCons
and ZOAdam, as torch.optim.Optimizer subclasses whose `step(closure)` estimates the gradient from loss values
only.

    opt = ZOSGD(model.named_parameters(), lr=1e-3, q=1, mu=1e-3, seed=0)
    loss = opt.step(lambda: loss_fn(model(x), y))     # closure: the loss at the CURRENT parameters, no backward

Flat parameter space: all parameters of the optimizer, group by group in order, are consecutive segments of one
flat vector; direction k of step t is z(seed_t, k, ·) from the seeded in-kernel generator of pyunlearn.ops.zo,
never stored. seed_t is derived from (seed, t) by SeedSequence mixing, so a run is reproducible and a resumed
one (state_dict / load_state_dict) continues with the same directions.

Estimate: with coefficients c_k (the projected gradients, `pyunlearn.zo.estimators.spsa_projections`)
    central (default, as ZO-Bench/MeZO): c_k = (l(θ+μz_k) − l(θ−μz_k)) / (2μ)     2q + 1 forwards
    forward:                            c_k = (l(θ+μz_k) − l(θ)) / μ              q + 1 forwards
the gradient estimate is g = (1/q) Σ_k c_k z_k. The step returns l(θ) at the parameters before the update.

Update rules (η = lr, λ = weight_decay):
    ZOSGD, momentum 0   θ ← θ(1 − ηλ) − η g            MeZO memory-optimal: no state; the update is ONE
                                                        zo_accumulate_ with coeffs = c (on device, no .item())
    ZOSGD, momentum β   b ← β b + (g + λθ); θ ← θ − η b (torch SGD, dampening 0; state: 1 × params)
    ZOSGDSign           g = (1/q) Σ_k sign(c_k) z_k (sign of the SCALAR projection), then as ZOSGD momentum 0
    ZOSGDCons           l0 = l(θ), l1 = l(θ − ηg), l2 = l(θ + ηg); keep the argmin (ties: the earlier one);
                        2q + 3 forwards (central); the choice is made on the device (no host sync)
    ZOAdam              torch.optim.Adam on g (+ λθ coupled): state 2 × params, plus a transient g
Weight decay is skipped for parameters whose name contains one of `no_decay` (default: MeZO's "bias",
"layer_norm", "layernorm", plus "norm"/"bn") when the optimizer is given names (model.named_parameters()) — right for HF
models, whose names say what a parameter is; for models whose names do not (nn.Sequential: "1.weight" may be a
norm layer's) use `decay_groups(model, weight_decay)`, which decides by module type; with plain tensors use
explicit groups ({"params": ..., "weight_decay": 0.0}). ZOSGDCons does not support weight decay.

Explicit-gradient mode: `step()` with no closure uses each parameter's .grad (filled by an estimator, e.g.
pyunlearn.zo.estimators.cge) as g for ZOSGD and ZOAdam (plain SGD / Adam); Sign and Cons need the closure.

Distributed: with process_group set, each rank evaluates a contiguous slice of the q directions from the same
seed and ONE all-reduce of the q coefficients follows (pyunlearn.zo.distributed); every rank then applies the
identical update. All ranks must call step with the same batch.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

_DISTS = ("gaussian", "rademacher")
_NO_DECAY = ("bias", "layer_norm", "layernorm", "norm", "bn")


def derive_seed(seed: int, step: int) -> int:
    """The direction seed of step `step` of a run seeded `seed` (63-bit, SeedSequence mixing, not seed + step)."""
    hi, lo = np.random.SeedSequence([int(seed), int(step), 0x5A0]).generate_state(2, dtype=np.uint32)
    return (int(hi) << 31) ^ int(lo)


def _check_real(name: str, v, *, positive: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise TypeError(f"{name} must be a finite Python float, got {v!r}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if not positive and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")


def _base_seed(seed) -> int:
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=seed))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63) or a torch.Generator, got {seed!r}")
    return seed


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two named param groups of `model`'s trainable parameters: weights with `weight_decay`, and biases plus
    every parameter of a normalisation module (a class whose name contains "Norm": BatchNorm, LayerNorm,
    GroupNorm, RMSNorm, ...) with weight decay 0."""
    _check_real("weight_decay", weight_decay)
    no_wd: set[int] = set()
    for mod in model.modules():
        if "norm" in type(mod).__name__.lower():
            no_wd.update(id(p) for p in mod.parameters(recurse=False))
    decay, keep = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (keep if id(p) in no_wd or name.rsplit(".", 1)[-1] == "bias" else decay).append((name, p))
    return [g for g in ({"params": [p for _, p in decay], "param_names": [n for n, _ in decay],
                         "weight_decay": weight_decay},
                        {"params": [p for _, p in keep], "param_names": [n for n, _ in keep],
                         "weight_decay": 0.0}) if g["params"]]


class ZOOptimizer(torch.optim.Optimizer, metaclass=abc.ABCMeta):
    """Base class: option checks, the flat-space layout of the groups, the per-step seed and the estimate.

    Subclasses implement `_update(closure, loss0, coeffs, seed)` (closure mode) and optionally `_grad_update()`
    (explicit-gradient mode).
    """

    def __init__(self, params, defaults: dict, *, q: int = 1, mu: float = 1e-3, central: bool = True,
                 dist: str = "gaussian", seed: int | torch.Generator = 0, no_decay: Sequence[str] = _NO_DECAY,
                 process_group=None):
        _check_real("lr", defaults.get("lr"))
        _check_real("weight_decay", defaults.get("weight_decay", 0.0))
        _check_real("mu", mu, positive=True)
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise ValueError(f"q must be an int >= 1, got {q!r}")
        if dist not in _DISTS:
            raise ValueError(f"dist must be one of {_DISTS}, got {dist!r}")
        if not isinstance(central, bool):
            raise TypeError(f"central must be a bool, got {type(central).__name__}")
        if isinstance(no_decay, str) or not all(isinstance(s, str) for s in no_decay):
            raise TypeError(f"no_decay must be a sequence of name substrings, got {no_decay!r}")
        super().__init__(params, defaults)
        for i, group in enumerate(self.param_groups):
            _check_real(f"param_groups[{i}]['lr']", group["lr"])
            _check_real(f"param_groups[{i}]['weight_decay']", group["weight_decay"])
            for p in group["params"]:
                if not p.is_floating_point():
                    raise TypeError(f"parameters must be floating point, got {p.dtype}")
        self.q, self.mu, self.central, self.dist = q, float(mu), central, dist
        self.no_decay = tuple(s.lower() for s in no_decay)
        self.seed = _base_seed(seed)
        self.steps = 0  # steps taken: the next step's directions come from derive_seed(seed, steps)
        self.process_group = process_group

    # -- layout -------------------------------------------------------------------------------------------
    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _group_offsets(self) -> list[int]:
        """Flat offset of each group's first parameter in the optimizer's flat parameter space."""
        offs, o = [], 0
        for g in self.param_groups:
            offs.append(o)
            o += sum(p.numel() for p in g["params"])
        return offs

    def _decayed(self, group: dict) -> list[Tensor]:
        """The parameters of `group` that weight decay acts on (the no_decay name filter, when names are known)."""
        names = group.get("param_names")
        if names is None:
            return list(group["params"])
        return [p for n, p in zip(names, group["params"]) if not any(s in n.lower() for s in self.no_decay)]

    # -- estimate -----------------------------------------------------------------------------------------
    def _projections(self, closure: Callable[[], Tensor], seed: int) -> tuple[Tensor, Tensor]:
        if self.process_group is not None:
            from pyunlearn.zo.distributed import distributed_spsa_projections

            return distributed_spsa_projections(closure, self._params(), q=self.q, mu=self.mu, seed=seed,
                                                central=self.central, dist=self.dist, group=self.process_group)
        from pyunlearn.zo.estimators import spsa_projections

        return spsa_projections(closure, self._params(), q=self.q, mu=self.mu, seed=seed, central=self.central,
                                dist=self.dist)

    def _accumulate(self, tensors: list[Tensor], coeffs: Tensor, seed: int, scale: float, offset: int) -> None:
        from pyunlearn.ops.zo import zo_accumulate_

        if tensors:
            zo_accumulate_(tensors, coeffs, seed=seed, scale=scale, dist=self.dist, offset=offset)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One update. closure() -> scalar loss at the current parameters (no backward; it runs under no_grad).
        Returns l(θ) before the update (closure mode) or None (explicit-gradient mode, which uses .grad)."""
        if closure is None:
            self._grad_update()
            self.steps += 1
            return None
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        seed = derive_seed(self.seed, self.steps)
        loss0, coeffs = self._projections(closure, seed)
        self._update(closure, loss0, coeffs, seed)
        self.steps += 1
        return loss0

    @abc.abstractmethod
    def _update(self, closure, loss0: Tensor, coeffs: Tensor, seed: int) -> None:
        """Apply the step from the projected gradients `coeffs` of the directions of `seed`."""

    def _grad_update(self) -> None:
        raise ValueError(f"{type(self).__name__}.step needs a closure (it has no explicit-gradient mode)")

    def _explicit_grad(self, group: dict) -> list[tuple[Tensor, Tensor]]:
        return [(p, p.grad) for p in group["params"] if p.grad is not None]

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["zo"] = {"seed": self.seed, "steps": self.steps, "q": self.q, "mu": self.mu, "central": self.central,
                    "dist": self.dist}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        zo = state_dict.pop("zo", None)
        if zo is None:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state has no 'zo' entry (seed/steps); "
                             f"it was not written by a ZO optimizer")
        super().load_state_dict(state_dict)
        self.seed, self.steps = int(zo["seed"]), int(zo["steps"])
        self.q, self.mu, self.central, self.dist = int(zo["q"]), float(zo["mu"]), bool(zo["central"]), zo["dist"]


class ZOSGD(ZOOptimizer):
    """ZO-SGD (momentum 0: MeZO's memory-optimal in-place update, no state) and ZO-SGD-MMT (momentum > 0: torch
    SGD momentum on g, one buffer per parameter). See the module docstring for the rules and options."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0, *,
                 q: int = 1, mu: float = 1e-3, central: bool = True, dist: str = "gaussian",
                 seed: int | torch.Generator = 0, no_decay: Sequence[str] = _NO_DECAY, process_group=None):
        _check_real("momentum", momentum)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}, q=q, mu=mu,
                         central=central, dist=dist, seed=seed, no_decay=no_decay, process_group=process_group)

    def _coeffs(self, coeffs: Tensor) -> Tensor:
        return coeffs

    def _update(self, closure, loss0: Tensor, coeffs: Tensor, seed: int) -> None:
        coeffs = self._coeffs(coeffs)
        for group, off in zip(self.param_groups, self._group_offsets()):
            lr, wd, beta = group["lr"], group["weight_decay"], group["momentum"]
            params = list(group["params"])
            if beta == 0:
                if wd != 0:
                    torch._foreach_mul_(self._decayed(group), 1.0 - lr * wd)
                # θ -= lr/q Σ c_k z_k: one pass, z regenerated in-kernel, nothing stored
                self._accumulate(params, coeffs, seed, -lr / self.q, off)
                continue
            bufs = [self._buffer(p) for p in params]
            torch._foreach_mul_(bufs, beta)
            if wd != 0:
                dec = {id(p) for p in self._decayed(group)}
                pairs = [(b, p) for b, p in zip(bufs, params) if id(p) in dec]
                if pairs:
                    torch._foreach_add_([b for b, _ in pairs], [p for _, p in pairs], alpha=wd)
            self._accumulate(bufs, coeffs, seed, 1.0 / self.q, off)  # b = βb + λθ + g
            torch._foreach_add_(params, bufs, alpha=-lr)

    def _buffer(self, p: Tensor) -> Tensor:
        st = self.state[p]
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return st["momentum_buffer"]

    def _grad_update(self) -> None:
        for group in self.param_groups:
            lr, wd, beta = group["lr"], group["weight_decay"], group["momentum"]
            dec = {id(p) for p in self._decayed(group)}
            for p, g in self._explicit_grad(group):
                d = g.add(p, alpha=wd) if (wd != 0 and id(p) in dec) else g
                if beta != 0:
                    b = self._buffer(p)
                    b.mul_(beta).add_(d)
                    d = b
                p.add_(d, alpha=-lr)


class ZOSGDSign(ZOSGD):
    """ZO-SGD-Sign: g = (1/q) Σ_k sign(c_k) z_k — the sign of the SCALAR projected gradient (ZO-Bench), not an
    element-wise sign; then the ZOSGD update (momentum 0: no state)."""

    def _coeffs(self, coeffs: Tensor) -> Tensor:
        return torch.sign(coeffs)

    def _grad_update(self) -> None:
        ZOOptimizer._grad_update(self)


class ZOSGDCons(ZOOptimizer):
    """ZO-SGD-Cons (conservative): with g the ZO-SGD estimate, evaluate l(θ − ηg) and l(θ + ηg) by applying and
    undoing in-place updates and keep the parameters with the smallest of l(θ), l(θ − ηg), l(θ + ηg). No state;
    no weight decay (the candidates are compared by their loss alone)."""

    def __init__(self, params, lr: float = 1e-3, *, q: int = 1, mu: float = 1e-3, central: bool = True,
                 dist: str = "gaussian", seed: int | torch.Generator = 0, process_group=None):
        super().__init__(params, {"lr": lr, "weight_decay": 0.0}, q=q, mu=mu, central=central, dist=dist,
                         seed=seed, process_group=process_group)
        if any(g["weight_decay"] != 0 for g in self.param_groups):
            raise ValueError("ZOSGDCons does not support weight_decay; got a group with weight_decay != 0")

    def _move(self, coeffs: Tensor, seed: int, factor: float | Tensor) -> None:
        # θ += factor * lr / q * Σ c_k z_k, group by group (each group its own lr); factor may be a 0-d tensor
        for group, off in zip(self.param_groups, self._group_offsets()):
            self._accumulate(list(group["params"]), coeffs * factor, seed, group["lr"] / self.q, off)

    def _update(self, closure, loss0: Tensor, coeffs: Tensor, seed: int) -> None:
        self._move(coeffs, seed, -1.0)  # θ − ηg
        l1 = closure().detach()
        self._move(coeffs, seed, 2.0)  # θ + ηg
        l2 = closure().detach()
        # from θ + ηg: keep (0) if l2 is the strict minimum, go to θ − ηg (−2) if l1 is, back to θ (−1) else
        l0 = loss0.to(l1.dtype)
        back = torch.where(l1 < l0, -2.0, -1.0)
        factor = torch.where((l2 < l0) & (l2 < l1), 0.0, torch.where(l1 < l0, back, -1.0))
        self._move(coeffs, seed, factor.to(coeffs.dtype))


class ZOAdam(ZOOptimizer):
    """ZO-Adam: torch.optim.Adam's update (bias-corrected m and v, coupled weight decay g + λθ) on the ZO
    estimate g. State: exp_avg and exp_avg_sq (2 × params) plus a transient g of 1 × params per step."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, q: int = 1, mu: float = 1e-3, central: bool = True,
                 dist: str = "gaussian", seed: int | torch.Generator = 0, no_decay: Sequence[str] = _NO_DECAY,
                 process_group=None):
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be a pair in [0, 1), got {betas!r}")
        _check_real("eps", eps, positive=True)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}, q=q, mu=mu,
                         central=central, dist=dist, seed=seed, no_decay=no_decay, process_group=process_group)

    def _adam(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        b1, b2 = group["betas"]
        dec = {id(p) for p in self._decayed(group)}
        for p, g in zip(params, grads):
            st = self.state[p]
            if "step" not in st:
                st["step"] = torch.zeros((), dtype=torch.float32)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            if wd != 0 and id(p) in dec:
                g = g.add(p, alpha=wd)
            st["step"] += 1
            t = float(st["step"])
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / (1 - b2**t) ** 0.5).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))

    def _update(self, closure, loss0: Tensor, coeffs: Tensor, seed: int) -> None:
        from pyunlearn.ops.zo import assemble

        for group, off in zip(self.param_groups, self._group_offsets()):
            params = list(group["params"])
            if params:
                grads = assemble(params, coeffs, seed=seed, dist=self.dist, scale=1.0 / self.q, offset=off)
                self._adam(group, params, grads)

    def _grad_update(self) -> None:
        for group in self.param_groups:
            pg = self._explicit_grad(group)
            self._adam(group, [p for p, _ in pg], [g for _, g in pg])


__all__ = ["ZOSGD", "ZOAdam", "ZOOptimizer", "ZOSGDCons", "ZOSGDSign", "decay_groups", "derive_seed"]
