"""Sophia (clipped diagonal-Hessian-preconditioned steps), masked, as SOUL uses it for LLM unlearning."""

from __future__ import annotations

import torch

from pyunlearn.ops._checks import check_number
from pyunlearn.optim._masked import MaskedOptimizer, check_betas

HESSIAN_MODES = ("sqgrad", "external")


class Sophia(MaskedOptimizer):
    """SophiaG's update (Liu et al. 2023) over a masked subset of each parameter:

        p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  p -= lr * sign(m) * min(|m| / (rho*bs*max(h, 0) + eps), 1)

    hessian="sqgrad" (SOUL's code): h = b2 h + (1-b2) g^2 from the step's own gradient, every step, fused into
    the step kernel. hessian="external" (official SophiaG): h changes only in update_hessian(), called every k
    steps after backpropagating a Gauss-Newton-Bartlett (sampled-label) or Hutchinson loss into .grad.
    SOUL's code also updates m twice per step; that is a bug and is not reproduced. Defaults are SophiaG's
    (lr 1e-4, betas (0.965, 0.99), rho 0.04, weight decay 0.1, bs 5120); SOUL uses betas (0.9, 0.95).
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.965, 0.99), rho: float = 0.04,
                 weight_decay: float = 1e-1, *, bs: float = 5120.0, eps: float = 1e-15, hessian: str = "sqgrad",
                 maximize: bool = False, masks=None):
        check_number("lr", lr)
        check_number("rho", rho)
        check_number("weight_decay", weight_decay)
        check_number("bs", bs, positive=True)
        check_number("eps", eps, positive=True)
        if hessian not in HESSIAN_MODES:
            raise ValueError(f"hessian must be one of {HESSIAN_MODES}, got {hessian!r}")
        defaults = dict(lr=lr, betas=check_betas(betas), rho=rho, weight_decay=weight_decay, bs=float(bs), eps=eps,
                        hessian=hessian, maximize=maximize)
        super().__init__(params, defaults, masks)

    def _state_of(self, p):
        st = self.state[p]
        if "exp_avg" not in st:
            st["step"] = torch.tensor(0.0, dtype=torch.float32)
            st["exp_avg"], st["hessian"] = self._new_state(p), self._new_state(p)
        return st

    @torch.no_grad()
    def update_hessian(self) -> None:
        """h = b2 h + (1-b2) g^2 from the current .grad (the sampled-label / Hutchinson gradient), only where
        masks are on. Call it every k steps with hessian="external"."""
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in self._params_with_grad(group):
                h = self._state_of(p)["hessian"]
                g = p.grad.to(h.dtype)
                new = beta2 * h + (1 - beta2) * g * g
                mask = self.mask_of(p)
                if mask is None:
                    h.copy_(new)
                elif mask.dtype in (torch.bool, torch.uint8):
                    h.copy_(torch.where(mask != 0, new, h))
                else:
                    h.view(-1)[mask.long()] = new.view(-1)[mask.long()]

    def _step_group(self, group: dict) -> None:
        ps, gs, ms, hs, masks = [], [], [], [], []
        for p in self._params_with_grad(group):
            st = self._state_of(p)
            st["step"] += 1
            for lst, t in zip((ps, gs, ms, hs, masks), (p, p.grad, st["exp_avg"], st["hessian"], self.mask_of(p))):
                lst.append(t)
        if ps:
            beta1, beta2 = group["betas"]
            torch.ops.pyunlearn.masked_sophia_step(
                ps, gs, ms, hs, masks, group["lr"], beta1, beta2, group["rho"], group["bs"],
                group["weight_decay"], group["eps"], group["hessian"] == "sqgrad", group["maximize"])
