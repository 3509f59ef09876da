"""MaskedAdamW: torch.optim.AdamW whose masked-off entries (weights AND moments) never move."""

from __future__ import annotations

from collections import defaultdict

import torch

from pyunlearn.ops._checks import check_number
from pyunlearn.optim._masked import MaskedOptimizer, check_betas


class MaskedAdamW(MaskedOptimizer):
    """AdamW (decoupled weight decay, bias correction, optional amsgrad) over a masked subset of each parameter.

    With masks=None it is torch.optim.AdamW. State keys match torch's ('step', 'exp_avg', 'exp_avg_sq',
    'max_exp_avg_sq'), so a torch.optim.AdamW state_dict loads. Each group is stepped by one multi-tensor op call
    per distinct step count (normally one).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False, masks=None):
        check_number("lr", lr)
        check_number("eps", eps)
        check_number("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=check_betas(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize)
        super().__init__(params, defaults, masks)

    def _step_group(self, group: dict) -> None:
        amsgrad = group["amsgrad"]
        by_step = defaultdict(lambda: ([], [], [], [], [], []))
        for p in self._params_with_grad(group):
            st = self.state[p]
            if "exp_avg" not in st:
                st["exp_avg"], st["exp_avg_sq"] = self._new_state(p), self._new_state(p)
            if amsgrad and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = self._new_state(p)
            lists = by_step[self._step_count(st)]
            for lst, t in zip(lists, (p, p.grad, st["exp_avg"], st["exp_avg_sq"],
                                      st["max_exp_avg_sq"] if amsgrad else None, self.mask_of(p))):
                lst.append(t)
        beta1, beta2 = group["betas"]
        for step, (ps, gs, ms, vs, xs, masks) in by_step.items():
            torch.ops.pyunlearn.masked_adamw_step(
                ps, gs, ms, vs, xs if amsgrad else [], masks, group["lr"], beta1, beta2, group["weight_decay"],
                group["eps"], step, amsgrad, group["maximize"])
