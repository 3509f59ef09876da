"""Forward parallelism across 2 gloo ranks on the CPU (spawned here): ZO-SGD with the directions split over the
ranks and CGE with the coordinates split equal the single-process run, and parameters are identical on every
rank."""

from __future__ import annotations

import datetime
import importlib
import inspect
import os
import socket
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from torch.nn import functional as F

from pyunlearn.zo.distributed import rank_slice

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(12, 1, 4, 4, generator=g), torch.randint(0, 3, (12,), generator=g)


def _coords(model) -> dict:
    p = dict(model.named_parameters())
    return {"1.weight": torch.tensor([0, 5, 17, 40, 99, 127]), "1.bias": torch.arange(8),
            "3.weight": torch.arange(0, p["3.weight"].numel(), 3)}


def _run(group=None) -> tuple[dict, dict]:
    """One sparse CGE and 3 steps of ZO-SGD-MMT (q=5, central); single-process when group is None. float64: a
    finite difference of fp32 losses turns rounding (a different chunk layout; the perturb/restore residue
    that differs between a rank's and the single process's query order) into 1e-5..1e-4 gradient noise."""
    from pyunlearn.optim import ZOSGD
    from pyunlearn.zo.distributed import distributed_cge
    from pyunlearn.zo.estimators import cge

    x, y = _batch()
    m64 = _model().double()
    if group is None:
        grads = cge(m64, F.cross_entropy, (x.double(), y), coords=_coords(m64), mu=1e-4)
    else:
        grads = distributed_cge(m64, F.cross_entropy, (x.double(), y), coords=_coords(m64), mu=1e-4, group=group)
    model = _model().double()
    x = x.double()
    opt = ZOSGD(model.parameters(), lr=0.05, momentum=0.9, q=5, mu=1e-3, seed=3, process_group=group)
    for _ in range(3):
        opt.step(lambda: F.cross_entropy(model(x), y))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return params, grads


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        params, grads = _run(dist.group.WORLD)
        torch.save({"params": params, "grads": grads}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _spawnable_worker(tmp_path, monkeypatch):
    """pytest's importlib mode gives this module a name a spawned child cannot import: hand the children a
    copy of this file under an importable name instead."""
    name = "_zo_distributed_case"
    (tmp_path / f"{name}.py").write_text(inspect.getsource(sys.modules[__name__]))
    monkeypatch.syspath_prepend(str(tmp_path))  # the children inherit sys.path
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)._worker


def test_two_gloo_ranks_match_single_process(tmp_path, monkeypatch):
    worker = _spawnable_worker(tmp_path, monkeypatch)
    ctx = mp.start_processes(worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False,
                             start_method="spawn")
    limit = 90.0
    end = time.monotonic() + limit
    # join returns True once every rank ended (False after one ended or the timeout); raises if a rank failed
    while not ctx.join(timeout=max(end - time.monotonic(), 0.0)):
        if time.monotonic() >= end:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"distributed ranks did not finish within {limit} s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    params, grads = _run(None)
    for name in params:
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name  # identical on every rank
        torch.testing.assert_close(ranks[0]["params"][name], params[name], rtol=1e-9, atol=1e-12)
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name
        torch.testing.assert_close(ranks[0]["grads"][name], grads[name], rtol=1e-9, atol=1e-12)
    assert grads["1.weight"].count_nonzero() <= 6 and grads["1.bias"].abs().sum() > 0


def test_rank_slice_partitions():
    for n in (0, 1, 5, 8):
        parts = [rank_slice(n, r, 3) for r in range(3)]
        assert [i for p in parts for i in p] == list(range(n))
    with pytest.raises(ValueError, match="rank must be in"):
        rank_slice(4, 2, 2)


def test_needs_initialised_process_group():
    from pyunlearn.zo.distributed import distributed_spsa_projections

    p = torch.zeros(3)
    with pytest.raises(RuntimeError, match="not initialised"):
        distributed_spsa_projections(lambda: p.sum(), [p], q=2, mu=1e-3, seed=0)


def test_one_all_reduce_per_step(tmp_path, monkeypatch):
    import torch.distributed as dist

    from pyunlearn.optim import ZOSGD
    from pyunlearn.zo import distributed as zd

    calls = []
    real = zd._all_reduce
    monkeypatch.setattr(zd, "_all_reduce", lambda t, group: (calls.append(t.numel()), real(t, group)))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        x, y = _batch()
        model = _model()
        opt = ZOSGD(model.parameters(), lr=0.05, q=4, mu=1e-3, process_group=dist.group.WORLD)
        for _ in range(3):
            opt.step(lambda: F.cross_entropy(model(x), y))
        assert calls == [4, 4, 4]  # one all-reduce of the q projected gradients per step
        zd.distributed_cge(model, F.cross_entropy, (x, y), coords=_coords(model), mu=1e-3)
        assert calls[3:] == [sum(p.numel() for p in model.parameters())]  # one of the flat gradient
    finally:
        dist.destroy_process_group()
