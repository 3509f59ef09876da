"""Pruning masks that live inside the model, and Unlearn-Sparse's pruners: OMP, IMP and SynFlow (spec §3.8).

A mask is a bool tensor over the `weight` of a Conv2d (and optionally Linear) layer; masks travel as a dict
{parameter name: mask}, e.g. {"conv1.weight": tensor([...], dtype=torch.bool)}. `apply_masks` makes the mask part
of the model: the module's class becomes a masked twin (MaskedConv2d / MaskedLinear) whose forward uses
`weight * weight_mask`, with the mask stored as the buffer `weight_mask`. Why this design rather than
torch.nn.utils.prune or torch.nn.utils.parametrize (both rename the parameter to `weight_orig` /
`parametrizations.weight.original`):

* `weight` stays the real Parameter under its usual name, so `init_weights` / `reset_parameters()` re-initialise
  the stored values (then `apply_masks` again gives the same sparse model), dense and sparse state_dicts share
  their keys (plus `<layer>.weight_mask`), and methods that walk `named_parameters()` see the usual names.
* The gradient of `weight * mask` is zero at pruned entries and `apply_masks` zeroes the stored weight there,
  so torch.optim's SGD/Adam/AdamW (momentum, weight decay, either kind), pyunlearn.optim's optimizers and an
  l1 penalty (sign(0) = 0) all leave pruned entries at exactly 0 — in the forward AND in storage. Only code that
  writes weights directly (noise, Newton steps) can move them; it calls `enforce_masks` (IU and FF do), and the
  forward stays masked regardless.
* The mask is a buffer of a module with a plain class: copy.deepcopy, state_dict/load_state_dict, .to(), and
  pickling (for nn.Conv2d / nn.Linear) work unchanged; loading a state_dict re-zeroes the pruned entries.
  Loading a sparse checkpoint needs the masks applied first: `apply_masks(model, masks_from_state_dict(sd))`.
* torch.func.functional_call / vmap see the masked forward, so per-sample gradients are masked too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LAYERS", "MaskedConv2d", "MaskedLinear", "apply_masks", "enforce_masks", "get_masks", "imp",
    "masks_from_state_dict", "omp", "remove_masks", "sparse_original", "sparsity", "synflow",
]

LAYERS = ("conv", "conv+linear")  # which layers' weights are pruned; Unlearn-Sparse prunes Conv2d only
SCOPES = ("global", "layer")


# -- masked modules ------------------------------------------------------------------------------------------------
class _MaskedMixin:
    """Shared by the masked twins: the mask buffer, and re-zeroing after load_state_dict."""

    weight_mask: Tensor

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.weight_mask.shape == self.weight.shape:
            with torch.no_grad():
                self.weight.masked_fill_(~self.weight_mask, 0)


class MaskedConv2d(_MaskedMixin, nn.Conv2d):
    """nn.Conv2d whose forward uses weight * weight_mask (made by apply_masks; remove_masks restores nn.Conv2d)."""

    _pyunlearn_base = nn.Conv2d

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.weight * self.weight_mask, self.bias)


class MaskedLinear(_MaskedMixin, nn.Linear):
    """nn.Linear whose forward uses weight * weight_mask (made by apply_masks; remove_masks restores nn.Linear)."""

    _pyunlearn_base = nn.Linear

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight * self.weight_mask, self.bias)


_TWINS: dict[type, type] = {nn.Conv2d: MaskedConv2d, nn.Linear: MaskedLinear}


def _masked_class(cls: type, where: str) -> type:
    """The masked twin of a Conv2d/Linear class; subclasses that keep the stock forward get a cached twin."""
    if issubclass(cls, _MaskedMixin):
        return cls
    if cls in _TWINS:
        return _TWINS[cls]
    for base, twin in ((nn.Conv2d, MaskedConv2d), (nn.Linear, MaskedLinear)):
        if issubclass(cls, base):
            if cls.forward is not base.forward:
                raise TypeError(f"cannot mask {where}: its class {cls.__name__} overrides {base.__name__}.forward, "
                                f"so a mask could not take part in its forward")
            # a subclass with the stock forward (e.g. a custom _conv_forward): twin = (twin, cls), cached so that
            # deepcopy keeps one class; such dynamic classes do not pickle as whole modules (state_dicts do)
            _TWINS[cls] = type(f"Masked{cls.__name__}", (twin, cls), {"_pyunlearn_base": cls})
            return _TWINS[cls]
    raise TypeError(f"can only mask the weight of a Conv2d or Linear layer, but {where} is a {cls.__name__}")


def _is_masked(module: nn.Module) -> bool:
    return isinstance(module, _MaskedMixin)


def _masked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if _is_masked(m)]


def _pname(module_name: str) -> str:
    return f"{module_name}.weight" if module_name else "weight"


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


# -- the mask API ----------------------------------------------------------------------------------------------------
def get_masks(model: nn.Module) -> dict[str, Tensor] | None:
    """{parameter name: bool mask} of every masked layer (copies), or None when the model carries no mask."""
    _check_model(model)
    masks = {_pname(name): m.weight_mask.detach().clone() for name, m in _masked_modules(model)}
    return masks or None


def _as_bool_mask(key: str, mask, weight: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"masks[{key!r}] must be a tensor, got {type(mask).__name__}")
    if mask.shape != weight.shape:
        raise ValueError(f"masks[{key!r}] must have the weight's shape {list(weight.shape)}, "
                         f"got {list(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"masks[{key!r}] must be a bool tensor (or hold only 0 and 1), got dtype {mask.dtype} "
                             f"with other values")
        mask = mask != 0
    return mask.detach().to(device=weight.device).clone()


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Make `masks` part of `model` (in place; returns it): forward uses weight * mask, pruned weights are set to 0.

    masks: {parameter name: bool tensor of the weight's shape (or 0/1 values)}, names as in named_parameters()
    and ending in "weight", of Conv2d or Linear layers. A layer that already has a mask gets the new one (it is
    replaced, not combined); layers not named keep what they have. Everything is checked before anything changes.
    """
    _check_model(model)
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict parameter name -> bool tensor, got {type(masks).__name__}")
    modules = dict(model.named_modules())
    plan = []
    for key, mask in masks.items():
        if not isinstance(key, str) or not (key == "weight" or key.endswith(".weight")):
            raise ValueError(f"masks keys must be names of weight parameters (ending in '.weight'), got {key!r}")
        mod_name = key[: -len(".weight")] if key != "weight" else ""
        module = modules.get(mod_name)
        if module is None:
            raise ValueError(f"masks[{key!r}] names no layer of the model (no module {mod_name!r})")
        if hasattr(module, "weight_orig"):
            raise ValueError(f"layer {mod_name!r} carries a torch.nn.utils.prune mask; prune.remove() it first")
        weight = module._parameters.get("weight")
        if not isinstance(weight, nn.Parameter):
            raise TypeError(f"masks[{key!r}]: layer {mod_name!r} has no weight parameter")
        cls = _masked_class(type(module), f"layer {mod_name!r}")
        plan.append((module, cls, _as_bool_mask(key, mask, weight)))
    for module, cls, mask in plan:
        if _is_masked(module):
            module.weight_mask = mask
        else:
            module.register_buffer("weight_mask", mask)
            module.__class__ = cls
        with torch.no_grad():
            module.weight.masked_fill_(~mask, 0)
    return model


def enforce_masks(model: nn.Module) -> nn.Module:
    """Set the stored weights to 0 where masked (after code wrote weights directly); the forward is masked anyway."""
    _check_model(model)
    with torch.no_grad():
        for _, m in _masked_modules(model):
            m.weight.masked_fill_(~m.weight_mask, 0)
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    """Drop every mask (in place; returns the model): layers get their plain class back, pruned weights stay 0."""
    _check_model(model)
    enforce_masks(model)
    for _, m in _masked_modules(model):
        del m._buffers["weight_mask"]
        m.__class__ = m._pyunlearn_base
    return model


def masks_from_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """The masks stored in a sparse model's state_dict ({"<layer>.weight": mask}), or None when it has none.

    Loading a sparse checkpoint into a fresh model: apply_masks(model, masks_from_state_dict(sd)) first, then
    model.load_state_dict(sd)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    masks = {k[: -len("_mask")]: v for k, v in state_dict.items() if k == "weight_mask" or k.endswith(".weight_mask")}
    return masks or None


def sparsity(model: nn.Module, *, layers: str | None = None) -> float:
    """Fraction of pruned weights.

    layers=None: over the masked layers, by their masks (0.0 when the model has no mask). layers="conv" or
    "conv+linear": the fraction of exactly-zero entries among those layers' weights, masks or not."""
    _check_model(model)
    if layers is None:
        ms = [m.weight_mask for _, m in _masked_modules(model)]
        total = sum(m.numel() for m in ms)
        return float(sum(int((~m).sum()) for m in ms) / total) if total else 0.0
    ws = [m.weight for _, m in _targets(model, layers)]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))


# -- pruning ---------------------------------------------------------------------------------------------------------
def _check_layers(layers) -> None:
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, got {layers!r}")


def _targets(model: nn.Module, layers: str) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs whose weight the pruners score, in named_modules order."""
    _check_model(model)
    _check_layers(layers)
    kinds = (nn.Conv2d,) if layers == "conv" else (nn.Conv2d, nn.Linear)
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    if not found:
        if layers == "conv":
            raise ValueError("model has no Conv2d layer to prune with layers='conv'; use layers='conv+linear' to "
                             "prune Linear layers (e.g. an MLP)")
        raise ValueError("model has no Conv2d or Linear layer to prune")
    return found


def _check_rate(name: str, rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise TypeError(f"{name} must be a number in [0, 1), got {rate!r}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (the fraction of weights pruned), got {rate!r}")
    return float(rate)


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _current_mask(module: nn.Module) -> Tensor:
    if _is_masked(module):
        return module.weight_mask
    return torch.ones_like(module.weight, dtype=torch.bool)


def _keep_top(scores: list[Tensor], old: list[Tensor], n_keep: int) -> list[Tensor]:
    """Masks keeping exactly the n_keep highest-scoring entries among those `old` keeps (pruned stay pruned)."""
    flat = torch.cat([s.detach().reshape(-1).to(torch.float64).cpu() for s in scores])
    alive = torch.cat([o.reshape(-1).cpu() for o in old])
    if n_keep > int(alive.sum()):
        raise ValueError(f"cannot keep {n_keep} weights: only {int(alive.sum())} are unpruned (masks never regrow)")
    flat = flat.masked_fill(~alive, -math.inf)
    keep = torch.zeros_like(alive)
    if n_keep > 0:
        keep[torch.topk(flat, n_keep, sorted=False).indices] = True
    out, start = [], 0
    for s in scores:
        out.append(keep[start:start + s.numel()].reshape(s.shape).to(s.device))
        start += s.numel()
    return out


def _n_keep(n: int, rate: float) -> int:
    return n - round(rate * n)


def _prune_by_score(model: nn.Module, targets, scores: list[Tensor], *, n_keep: int | None = None,
                    layer_rate: float | None = None) -> dict[str, Tensor]:
    """Keep the n_keep best-scoring weights across the layers (global), or prune layer_rate of each layer;
    apply the masks to the model and return them."""
    old = [_current_mask(m) for _, m in targets]
    if layer_rate is None:
        masks = _keep_top(scores, old, n_keep)
    else:
        masks = [_keep_top([s], [o], _n_keep(o.numel(), layer_rate))[0] for s, o in zip(scores, old)]
    out = {_pname(name): mk for (name, _), mk in zip(targets, masks)}
    apply_masks(model, out)
    return out


def _check_not_below(targets, rate: float) -> None:
    old = [_current_mask(m) for _, m in targets]
    pruned, total = sum(int((~o).sum()) for o in old), sum(o.numel() for o in old)
    if round(rate * total) < pruned:
        raise ValueError(f"rate {rate} is below the model's current sparsity {pruned / total:.4f}; masks never "
                         f"regrow")


def omp(model: nn.Module, rate: float, *, layers: str = "conv", scope: str = "global") -> dict[str, Tensor]:
    """One-shot L1-magnitude pruning (in place): prune `rate` of the weights of the chosen layers.

    scope="global" ranks |w| across all the layers together (Unlearn-Sparse), "layer" prunes `rate` of each
    layer. Already pruned weights stay pruned and count towards `rate`. Returns the masks (also applied)."""
    rate = _check_rate("rate", rate)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    targets = _targets(model, layers)
    scores = [m.weight.detach().abs() for _, m in targets]
    if scope == "global":
        _check_not_below(targets, rate)
        return _prune_by_score(model, targets, scores, n_keep=_n_keep(sum(s.numel() for s in scores), rate))
    for t in targets:
        _check_not_below([t], rate)
    return _prune_by_score(model, targets, scores, layer_rate=rate)


def _load_values(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy a (dense or sparse) state_dict's values into the model, masks excepted, then re-zero pruned entries."""
    own = model.state_dict()

    def skip(k: str) -> bool:
        return k == "weight_mask" or k.endswith(".weight_mask")

    missing = sorted(k for k in own if not skip(k) and k not in state)
    extra = sorted(k for k in state if not skip(k) and k not in own)
    if missing or extra:
        raise ValueError(f"rewind_state does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for k, v in state.items():
            if not skip(k):
                if v.shape != own[k].shape:
                    raise ValueError(f"rewind_state[{k!r}] has shape {list(v.shape)}, the model's is "
                                     f"{list(own[k].shape)}")
                own[k].copy_(v)
    enforce_masks(model)


def imp(train_fn: Callable[[nn.Module], object], model: nn.Module, rate_per_round: float = 0.2, rounds: int = 1,
        rewind_state: Mapping[str, Tensor] | None = None, *, layers: str = "conv") -> dict[str, Tensor]:
    """Iterative magnitude pruning (in place): `rounds` x (train_fn(model) -> prune rate_per_round of the remaining
    weights, global L1 -> rewind every value (BN buffers included) to rewind_state, masks kept).

    rewind_state: a state_dict to rewind to (Unlearn-Sparse: the weights after epoch 8); None = the model as it is
    on entry (rewinding to initialisation). Starting dense, the sparsity ends at 1 - (1 - rate_per_round)^rounds.
    The model is returned rewound, i.e. untrained under its final mask: the caller trains it (sparse_original does).
    Returns the masks."""
    if not callable(train_fn):
        raise TypeError(f"train_fn must be callable as train_fn(model), got {type(train_fn).__name__}")
    q = _check_rate("rate_per_round", rate_per_round)
    rounds = _check_int("rounds", rounds)
    targets = _targets(model, layers)
    if rewind_state is None:
        rewind_state = model.state_dict()
    if not isinstance(rewind_state, Mapping):
        raise TypeError(f"rewind_state must be a state_dict (dict), got {type(rewind_state).__name__}")
    rewind_state = {k: v.detach().clone() for k, v in rewind_state.items()}
    kept0 = sum(int(_current_mask(m).sum()) for _, m in targets)
    masks = None
    for r in range(rounds):
        train_fn(model)
        n_keep = round(kept0 * (1.0 - q) ** (r + 1))
        scores = [m.weight.detach().abs() for _, m in targets]
        masks = _prune_by_score(model, targets, scores, n_keep=n_keep)
        _load_values(model, rewind_state)
    return masks


def synflow(model: nn.Module, rate: float, input_shape, rounds: int = 100, *, layers: str = "conv",
            ) -> dict[str, Tensor]:
    """SynFlow (Tanaka et al. 2020), data-free pruning at initialisation (in place): prune `rate` of the weights.

    Scores come from a float64 copy in eval mode with every floating tensor (weights, biases, BN affine and
    running statistics) replaced by its absolute value, fed one all-ones input of shape input_shape (no batch
    dim): R = sum of the outputs, score = |w * dR/dw|. Over `rounds` rounds the kept fraction follows the
    exponential schedule (1 - rate)^((r+1)/rounds), re-scoring under the current mask each round. The model's
    own weights are untouched except the pruned entries, which become 0. Returns the masks (also applied)."""
    rate = _check_rate("rate", rate)
    rounds = _check_int("rounds", rounds)
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    if (not isinstance(input_shape, (tuple, list, torch.Size)) or len(input_shape) == 0
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape)):
        raise ValueError(f"input_shape must be a tuple of positive ints (one sample, no batch dim), got "
                         f"{input_shape!r}")
    targets = _targets(model, layers)
    _check_not_below(targets, rate)
    names = [name for name, _ in targets]
    work = copy.deepcopy(model)
    unmasked = {_pname(n): torch.ones_like(m.weight, dtype=torch.bool) for n, m in targets if not _is_masked(m)}
    apply_masks(work, unmasked)
    work = work.double().eval()
    with torch.no_grad():
        for v in work.state_dict().values():
            if v.is_floating_point():
                v.abs_()
    mods = dict(work.named_modules())
    wtargets = [(n, mods[n]) for n in names]
    for p in work.parameters():
        p.requires_grad_(False)
    for _, m in wtargets:
        m.weight.requires_grad_(True)
    device = wtargets[0][1].weight.device
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    kept0 = sum(int(m.weight_mask.sum()) for _, m in wtargets)
    total = sum(m.weight.numel() for _, m in wtargets)
    n_final = _n_keep(total, rate)
    for r in range(rounds):
        out = work(x)
        grads = torch.autograd.grad(out.sum(), [m.weight for _, m in wtargets])
        scores = [(g * m.weight).detach().abs() for g, (_, m) in zip(grads, wtargets)]
        n_keep = n_final if r == rounds - 1 else round(kept0 * (n_final / kept0) ** ((r + 1) / rounds))
        _prune_by_score(work, wtargets, scores, n_keep=n_keep)
    masks = {_pname(n): m.weight_mask.clone() for n, m in wtargets}
    apply_masks(model, masks)
    return masks


# -- prune first, then unlearn ---------------------------------------------------------------------------------------
METHODS = ("omp", "imp", "synflow")


def sparse_original(model: nn.Module, train_fn: Callable[[nn.Module, int, int], object], *, epochs: int,
                    method: str = "omp", rate: float | None = None, rewind_epoch: int = 8,
                    rounds: int | None = None, rate_per_round: float = 0.2, input_shape=None,
                    synflow_rounds: int = 100, layers: str = "conv") -> nn.Module:
    """Train the sparse original model θ_o^s of Unlearn-Sparse from an untrained model (in place; returns it).

    train_fn(model, start_epoch, stop_epoch) trains the model for epochs [start_epoch, stop_epoch) of an
    `epochs`-long schedule (the LR schedule starts at start_epoch: rewinding to epoch k "advances it by k steps").
    * "omp": train [0, k) -> keep the epoch-k state -> train [k, epochs) -> prune `rate` (global L1) ->
      rewind to the epoch-k state, masks kept -> train [k, epochs). k = rewind_epoch (0 = rewind to init).
    * "imp": as omp, but the train -> prune rate_per_round of the remaining -> rewind cycle runs `rounds` times
      (sparsity 1 - (1 - rate_per_round)^rounds); without rounds, the fewest rounds reaching `rate`.
    * "synflow": prune `rate` at initialisation (needs input_shape), then train [0, epochs).
    rate defaults to 0.95 (Unlearn-Sparse main results). The masks stay in the model (get_masks reads them)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not callable(train_fn):
        raise TypeError("train_fn must be callable as train_fn(model, start_epoch, stop_epoch), got "
                        f"{type(train_fn).__name__}")
    epochs = _check_int("epochs", epochs)
    _targets(model, layers)
    if method == "imp" and rounds is not None and rate is not None:
        raise ValueError(f"method 'imp' takes rounds or rate, not both (got rounds={rounds}, rate={rate})")
    if method == "synflow":
        synflow(model, 0.95 if rate is None else rate, input_shape, synflow_rounds, layers=layers)
        train_fn(model, 0, epochs)
        return model
    k = _check_int("rewind_epoch", rewind_epoch, low=0)
    if k >= epochs:
        raise ValueError(f"rewind_epoch must be < epochs ({epochs}), got {k}")
    if method == "omp":
        q, T = _check_rate("rate", 0.95 if rate is None else rate), 1
    else:
        q = _check_rate("rate_per_round", rate_per_round)
        if rounds is None:
            target = _check_rate("rate", 0.95 if rate is None else rate)
            if q == 0.0:
                raise ValueError("rate_per_round must be > 0 to reach a rate")
            T = max(1, math.ceil(math.log(1.0 - target) / math.log(1.0 - q) - 1e-9))
        else:
            T = _check_int("rounds", rounds)
    if k > 0:
        train_fn(model, 0, k)
    rewind = {n: v.detach().clone() for n, v in model.state_dict().items()}
    imp(lambda m: train_fn(m, k, epochs), model, q, T, rewind, layers=layers)
    train_fn(model, k, epochs)
    return model
