"""Shared machinery of the masked optimizers: masks (set, replaced, validated once), state_dict, grouping."""

from __future__ import annotations

import abc
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from pyunlearn.ops._checks import check_mask, check_number, state_dtype

try:
    from torch.distributed.tensor import DTensor as _DTensor
except ImportError:  # a torch build without torch.distributed
    _DTensor = None


def _is_dtensor(t: Any) -> bool:
    """True for a torch.distributed DTensor (FSDP2 shards parameters, grads and optimizer state into them)."""
    return _DTensor is not None and isinstance(t, _DTensor)


def check_betas(betas) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    check_number("betas[0]", betas[0], below=1.0)
    check_number("betas[1]", betas[1], below=1.0)
    return tuple(betas)


class MaskedOptimizer(torch.optim.Optimizer, metaclass=abc.ABCMeta):
    """torch.optim.Optimizer with per-parameter masks.

    masks: None (every parameter steps exactly as its torch.optim twin), or a dict parameter -> mask, where a mask
    is None, a bool/uint8 tensor of the parameter's shape, or a 1-D int32/int64 tensor of unique flat indices.
    Parameters missing from the dict step unmasked. Masks are validated once, in set_masks (index bounds and
    uniqueness included), and travel in state_dict so an interrupted run resumes with the same masks.
    """

    def __init__(self, params, defaults: dict, masks: Mapping[Tensor, Tensor | None] | None = None):
        super().__init__(params, defaults)
        self._masks: dict[Tensor, Tensor] = {}
        self.set_masks(masks)

    # -- masks --------------------------------------------------------------------------------------------------
    def _param_names(self) -> dict[Tensor, str]:
        names, k = {}, 0
        for g in self.param_groups:
            for p in g["params"]:
                names[p] = f"params[{k}]"
                k += 1
        return names

    def set_masks(self, masks: Mapping[Tensor, Tensor | None] | None) -> None:
        """Replace every mask (None clears them). Takes effect at the next step()."""
        if masks is None:
            self._masks = {}
            return
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a dict parameter -> mask (or None), got {type(masks).__name__}")
        names = self._param_names()
        new = {}
        for p, m in masks.items():
            if p not in names:
                raise ValueError("masks has a key that is not a parameter of this optimizer "
                                 f"(a tensor of shape {list(p.shape)})")
            if m is not None and (_is_dtensor(p) or _is_dtensor(m)) and (
                    not (_is_dtensor(p) and _is_dtensor(m)) or m.dtype not in (torch.bool, torch.uint8)
                    or m.placements != p.placements or m.shape != p.shape):
                raise ValueError(f"masks[{names[p]}]: a DTensor parameter needs a dense bool/uint8 DTensor mask "
                                     f"of its shape and placements ({list(p.shape)}, "
                                     f"{getattr(p, 'placements', 'not a DTensor')}), got "
                                     f"{type(m).__name__} {m.dtype} {list(m.shape)} "
                                     f"{getattr(m, 'placements', '')}")
            check_mask(f"masks[{names[p]}]", m, p, names[p], unique=True)
            if m is not None:
                new[p] = m.contiguous()
        self._masks = new

    def mask_of(self, p: Tensor) -> Tensor | None:
        return self._masks.get(p)

    @property
    def masks(self) -> dict[Tensor, Tensor]:
        return dict(self._masks)

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        index = {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        sd["masks"] = {index[p]: m for p, m in self._masks.items()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads our own state_dicts and torch.optim's of the same algorithm (then the current masks stay)."""
        state_dict = dict(state_dict)
        masks = state_dict.pop("masks", None)
        super().load_state_dict(state_dict)
        for p, st in self.state.items():  # torch casts state to the param dtype; we keep fp32 for half params
            for k, v in st.items():
                if k != "step" and isinstance(v, Tensor) and v.is_floating_point() and v.shape == p.shape:
                    st[k] = v.to(dtype=state_dtype(p.dtype), memory_format=torch.contiguous_format)
        if masks is not None:
            params = [p for g in self.param_groups for p in g["params"]]
            self.set_masks({params[int(i)]: m.to(params[int(i)].device) for i, m in masks.items()})

    # -- stepping -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step over every group (closure as in torch.optim)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if any(_is_dtensor(p) for p in group["params"]):
                self._step_group_sharded(group)
            else:
                self._step_group(group)
        return loss

    def _step_group_sharded(self, group: dict) -> None:
        """Step a group holding DTensor parameters (FSDP2's sharded parameters): the custom ops have no DTensor
        sharding rule, so they run on the local shards. Each DTensor parameter, its grad, its state and its mask
        (a DTensor with the parameter's placements) are swapped for their local tensors (views of the same
        storage, so the in-place updates land in the DTensors); state created during the step is wrapped back
        into DTensors with the parameter's placements, so it is sharded like the parameter and DCP reshards it."""
        local_of: dict[Tensor, Tensor] = {}
        local_state: dict[Tensor, dict] = {}
        local_masks: dict[Tensor, Tensor] = {}
        for p in group["params"]:
            lp = p.to_local() if _is_dtensor(p) else p
            if lp is not p and p.grad is not None:
                lp.grad = p.grad.to_local()
            local_of[p] = lp
            if p in self.state:
                local_state[lp] = {k: v.to_local() if _is_dtensor(v) else v for k, v in self.state[p].items()}
            m = self._masks.get(p)
            if m is not None:
                local_masks[lp] = m.to_local() if _is_dtensor(m) else m
        saved_state, saved_masks = self.state, self._masks
        self.state = defaultdict(dict, local_state)
        self._masks = local_masks
        try:
            self._step_group({**group, "params": [local_of[p] for p in group["params"]]})
            new_state = self.state
        finally:
            self.state, self._masks = saved_state, saved_masks
            for p, lp in local_of.items():
                if lp is not p:
                    lp.grad = None
        for p, lp in local_of.items():
            if lp not in new_state:
                continue
            st = self.state[p]
            for k, v in new_state[lp].items():
                if _is_dtensor(p) and isinstance(v, Tensor) and not _is_dtensor(v) and v.shape == lp.shape \
                        and v.dim() > 0:
                    old = st.get(k)
                    if _is_dtensor(old) and old.to_local().data_ptr() == v.data_ptr():
                        continue  # updated in place through its local view
                    v = _DTensor.from_local(v, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                           stride=p.stride())
                st[k] = v

    @abc.abstractmethod
    def _step_group(self, group: dict) -> None:
        """Step one parameter group with the optimizer's op."""

    @staticmethod
    def _params_with_grad(group: dict) -> Iterable[Tensor]:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("sparse gradients are not supported; give a dense grad and an index-list mask")
            yield p

    def _new_state(self, p: Tensor) -> Tensor:
        return torch.zeros_like(p, dtype=state_dtype(p.dtype), memory_format=torch.contiguous_format)

    @staticmethod
    def _step_count(state: dict) -> float:
        if "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
        state["step"] += 1
        return float(state["step"])
