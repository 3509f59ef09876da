"""MaskedSGD: torch.optim.SGD whose masked-off entries (weights AND momentum buffers) never move."""

from __future__ import annotations

import torch

from pyunlearn.ops._checks import check_number
from pyunlearn.optim._masked import MaskedOptimizer


class MaskedSGD(MaskedOptimizer):
    """SGD with momentum, dampening, nesterov and (coupled) weight decay over a masked subset of each parameter.

    With masks=None it is torch.optim.SGD; the state key is torch's 'momentum_buffer'. A new buffer starts as
    zeros and takes the (decayed) gradient on its first step where the mask is on; elsewhere it stays zero.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False, masks=None):
        check_number("lr", lr)
        check_number("momentum", momentum)
        check_number("dampening", dampening, low=None)
        check_number("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"nesterov needs momentum > 0 and dampening == 0, got momentum={momentum}, "
                             f"dampening={dampening}")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, masks)

    def _step_group(self, group: dict) -> None:
        momentum = group["momentum"]
        # first_step differs per parameter (a buffer is new): one op call for new buffers, one for the rest
        calls = {True: ([], [], [], []), False: ([], [], [], [])}
        for p in self._params_with_grad(group):
            st = self.state[p]
            first = False
            if momentum != 0 and st.get("momentum_buffer") is None:
                st["momentum_buffer"], first = self._new_state(p), True
            ps, gs, bs, ms = calls[first]
            ps.append(p)
            gs.append(p.grad)
            if momentum != 0:
                bs.append(st["momentum_buffer"])
            ms.append(self.mask_of(p))
        for first, (ps, gs, bs, ms) in calls.items():
            if ps:
                torch.ops.pyunlearn.masked_sgd_step(
                    ps, gs, bs, ms, group["lr"], momentum, group["dampening"], group["weight_decay"],
                    group["nesterov"], group["maximize"], first)
