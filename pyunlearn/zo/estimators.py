"""Zeroth-order gradient estimators: seeded SPSA projections, RGE and CGE (spec A0, A1.2, A1.5, A5.2).

Flat parameter space: the estimated parameters, in order (model.named_parameters() with requires_grad, or
the `params` mapping's order), are consecutive segments of one flat vector; parameter i starts at
param_offsets()[name_i]. Direction k at flat index j is z(seed, k, j) from pyunlearn.ops.zo's seeded
generator, so any chunk or subset of directions regenerates the same z, and nothing is ever stored.

    spsa_projections(closure, params, q, mu, seed)  the q projected gradients, perturbing in place (MeZO, O(d))
    rge(model, loss_fn, batch, q, mu, seed)         (1/q) sum_k c_k z_k; q directions per batched forward
                                                     when the model is a Sequential of supported layers
    cge(model, loss_fn, batch, coords, mu)          coordinate-wise forward differences with feature reuse

Numerics: the losses are differenced in float64; cross-entropy and MSE are reduced in float64 too
(_blocks.copy_losses); the clean loss of a batched query is computed inside the same batch as its perturbed
copies (spec A5.2), so kernel-to-kernel rounding does not show up as gradient noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from pyunlearn.zo import _batched, _reuse
from pyunlearn.zo._blocks import blocks_of, keep_buffers, model_loss

__all__ = ["cge", "param_offsets", "rge", "spsa_projections"]

DISTS = ("gaussian", "rademacher")
NamedParams = Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]


def _zo_ops():
    # Imported lazily: pyunlearn.ops.zo registers ops and must not be imported while pyunlearn.zo loads.
    from pyunlearn.ops import zo
    return zo


def _check_mu(mu) -> float:
    if isinstance(mu, bool) or not isinstance(mu, (int, float)):
        raise TypeError(f"mu must be a Python float, got {type(mu).__name__}")
    if not (mu > 0 and math.isfinite(mu)):
        raise ValueError(f"mu must be a finite number > 0, got {mu}")
    return float(mu)


def _check_q(q) -> int:
    if isinstance(q, bool) or not isinstance(q, int):
        raise TypeError(f"q must be a Python int, got {type(q).__name__}")
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    return q


def _check_dist(dist) -> None:
    if dist not in DISTS:
        raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be a Python int, got {type(seed).__name__}")


def _named(named_params: NamedParams) -> list[tuple[str, Tensor]]:
    items = list(named_params.items() if isinstance(named_params, Mapping) else named_params)
    seen = set()
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], Tensor)):
            raise TypeError(f"params must map names to Tensors (a dict or (name, Tensor) pairs), got {item!r:.80}")
        if item[0] in seen:
            raise ValueError(f"params names must be unique, {item[0]!r} appears twice")
        seen.add(item[0])
        if not item[1].is_floating_point():
            raise TypeError(f"params[{item[0]!r}] must be a floating-point tensor, got {item[1].dtype}")
    return items


def param_offsets(named_params: NamedParams) -> dict[str, int]:
    """Start of each parameter in the flat parameter space: offset_i = sum of numel of the earlier ones."""
    offsets, off = {}, 0
    for name, p in _named(named_params):
        offsets[name] = off
        off += p.numel()
    return offsets


def _model_params(model: nn.Module, params: NamedParams | None) -> list[tuple[str, Tensor]]:
    """The estimated parameters: model's trainable ones, or the given mapping (each must be a model parameter)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if params is None:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    items = _named(params)
    owned = {id(p) for p in model.parameters()}
    for name, p in items:
        if id(p) not in owned:
            raise ValueError(f"params[{name!r}] is not a parameter of the model")
    return items


def _unpack(batch) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"batch must be a pair (x, y), got {type(batch).__name__}")
    return batch[0], batch[1]


def spsa_projections(closure: Callable[[], Tensor], params: Sequence[Tensor], *, q: int, mu: float, seed: int,
                     central: bool = False, dist: str = "gaussian", directions: range | None = None,
                     offset: int = 0) -> tuple[Tensor, Tensor]:
    """Projected gradients of the seeded directions, perturbing the parameters in place (MeZO memory: O(d)).

    closure() returns the scalar loss at the CURRENT parameters (it is called under no_grad; no backward).
    Returns (loss0, coeffs): loss0 = l(theta) (computed once, also when central: the mean of l(theta +- mu z)
    is not used), and for k in `directions` (default range(q))
        coeffs[k'] = (l(theta + mu z_k) - l(theta)) / mu                      (forward, q+1 closures)
        coeffs[k'] = (l(theta + mu z_k) - l(theta - mu z_k)) / (2 mu)        (central, 2q+1 closures)
    with z_k = z(seed, k, offset + flat index) over params as one flat vector. Both are float64 tensors on the
    loss's device (no host sync). After each query the parameters are restored in place with restore_:
    |restored - theta| <= 2 eps (|theta| + |mu z|) per entry and query (two roundings; central:
    3 eps (|theta| + 2|mu z|)); over q queries these errors add up (a random walk in practice, q times the bound
    at worst). If the closure raises, the perturbation in flight is undone first.
    """
    q = _check_q(q)
    mu = _check_mu(mu)
    _check_seed(seed)
    _check_dist(dist)
    if isinstance(params, Tensor):
        params = [params]
    params = list(params)
    if not params or not all(isinstance(p, Tensor) for p in params):
        raise TypeError("params must be a non-empty sequence of Tensors")
    if directions is None:
        directions = range(q)
    if not isinstance(directions, range) or directions.step != 1 or len(directions) == 0 or directions.start < 0:
        raise ValueError(f"directions must be a non-empty range of direction indices >= 0 with step 1, "
                         f"got {directions!r}")
    zo = _zo_ops()
    with torch.no_grad():
        loss0 = closure().detach().reshape(()).double()
        coeffs = torch.empty(len(directions), dtype=torch.float64, device=loss0.device)
        for i, k in enumerate(directions):
            zo.perturb_(params, seed=seed, direction=k, alpha=mu, dist=dist, offset=offset)
            undo = mu
            try:
                plus = closure().detach().reshape(()).double()
                if central:
                    zo.perturb_(params, seed=seed, direction=k, alpha=-2.0 * mu, dist=dist, offset=offset)
                    undo = -mu
                    minus = closure().detach().reshape(()).double()
                    coeffs[i] = (plus - minus) / (2.0 * mu)
                else:
                    coeffs[i] = (plus - loss0) / mu
            finally:
                zo.restore_(params, seed=seed, direction=k, alpha=undo, dist=dist, offset=offset)
    return loss0, coeffs


def rge(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], batch, *, q: int, mu: float, seed: int,
        central: bool = False, dist: str = "gaussian", params: NamedParams | None = None,
        batched: bool | int | None = None) -> dict[str, Tensor]:
    """Randomized gradient estimate g = (1/q) sum_k c_k z_k of loss_fn(model(x), y), batch = (x, y).

    c_k are spsa_projections' coefficients (forward or central differences) of the seeded directions
    z_k = z(seed, k, ·) over the estimated parameters (params, default the trainable ones) as one flat vector
    from offset 0. Returns {name: full-shape estimate}. Gaussian z: an unbiased estimate of the gradient of the
    smoothed loss E_u l(theta + mu u).

    batched: None = automatic: when the model is an nn.Sequential (or declares `zo_blocks`) of Linear, Conv2d,
    BatchNorm and per-sample parameter-free layers, chunks of Q directions run as ONE batched forward
    (_batched.py; memory (Q+1) x (d + activations), default Q = _batched.default_chunk: min(q, 32) and at most
    256 MiB of directions); an int sets Q; False = the
    in-place sequential path (MeZO memory, O(d) for any q); True = batched or an error saying why not.
    Buffers (BatchNorm running statistics) are left as they were.
    """
    q = _check_q(q)
    mu = _check_mu(mu)
    _check_seed(seed)
    _check_dist(dist)
    named = _model_params(model, params)
    if not named:
        raise ValueError("model has no parameters to estimate (none requires grad and params is None)")
    x, y = _unpack(batch)
    tensors = [p for _, p in named]
    chunk = None
    if batched is not None and not isinstance(batched, bool):
        if not isinstance(batched, int) or batched < 1:
            raise ValueError(f"batched must be None, a bool or a chunk size >= 1, got {batched!r}")
        chunk = batched
    with keep_buffers(model), torch.no_grad():
        use_batched = batched is not False
        if use_batched:
            blocks = blocks_of(model)
            why = "the model is neither an nn.Sequential nor declares zo_blocks" if blocks is None else \
                _batched.unsupported(blocks, named, x)
            if why is not None:
                if batched is True or chunk is not None:
                    raise ValueError(f"batched={batched!r} but the model cannot run the batched forward: {why}")
                use_batched = False
        if use_batched:
            _, grads = _batched.estimate(blocks, named, loss_fn, x, y, q=q, mu=mu, seed=seed, central=central,
                                         dist=dist, chunk=chunk or _batched.default_chunk(q, named))
        else:
            _, coeffs = spsa_projections(lambda: model_loss(loss_fn, model(x), y), tensors, q=q, mu=mu, seed=seed,
                                         central=central, dist=dist)
            grads = _zo_ops().assemble(tensors, coeffs, seed=seed, dist=dist, scale=1.0 / q)
    return {name: g for (name, _), g in zip(named, grads)}


def _check_coords(coords, named: list[tuple[str, Tensor]]) -> dict[str, Tensor]:
    by_name = dict(named)
    if coords is None:
        return {n: torch.arange(p.numel(), device=p.device) for n, p in named}
    if not isinstance(coords, Mapping):
        raise TypeError(f"coords must be None or a dict {{name: 1-D LongTensor}}, got {type(coords).__name__}")
    out = {}
    for name, idx in coords.items():
        if name not in by_name:
            raise ValueError(f"coords names an unknown parameter {name!r}; known: {sorted(by_name)}")
        if not isinstance(idx, Tensor) or idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"coords[{name!r}] must be an int64/int32 Tensor of flat indices, got "
                            f"{idx.dtype if isinstance(idx, Tensor) else type(idx).__name__}")
        if idx.dim() != 1:
            raise ValueError(f"coords[{name!r}] must be 1-D, got shape {tuple(idx.shape)}")
        n = by_name[name].numel()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"coords[{name!r}] must hold flat indices in [0, {n}), got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        out[name] = idx.to(device=by_name[name].device, dtype=torch.int64)
    return out


def cge(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], batch, *,
        coords: Mapping[str, Tensor] | None = None, mu: float, params: NamedParams | None = None,
        chunk: int | None = None) -> dict[str, Tensor]:
    """Coordinate-wise gradient estimate g_i = (l(theta + mu e_i) - l(theta)) / mu (forward differences).

    coords: {name: 1-D LongTensor of flat indices} (sparse CGE; zero elsewhere); None = every coordinate of
    every estimated parameter (params, default the trainable ones). Returns {name: full-shape estimate}.

    nn.Sequential models (or models declaring `zo_blocks`) use feature reuse (_reuse.py): one clean forward
    caches every block input; chunk = P coordinates of a block run as one batched forward from that block's
    cached input, with the perturbed Linear/Conv2d/BatchNorm output a one-unit (one-channel) change carried
    locally through activations, BatchNorm and pooling into the next Linear/Conv2d. Parameters of other blocks
    take the generic path (cached prefix, the block evaluated per coordinate, batched suffix). Other models run
    the plain per-coordinate loop (one full forward per coordinate: exact but slow). Each clean loss is
    computed in the same batch as its perturbed copies. Parameters are restored exactly (the saved value is
    written back); buffers are left as they were.
    """
    mu = _check_mu(mu)
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be None or an int >= 1, got {chunk!r}")
    named = _model_params(model, params)
    coords = _check_coords(coords, named)
    x, y = _unpack(batch)
    out = {n: torch.zeros(p.shape, dtype=p.dtype, device=p.device) for n, p in named}
    with keep_buffers(model), torch.no_grad():
        values = _reuse.cge_values(model, named, coords, loss_fn, x, y, mu=mu, chunk=chunk)
    for name, v in values.items():
        out[name].view(-1)[coords[name]] = v.to(out[name].dtype)
    return out
