"""Training and evaluation of UM2N (zo_graph_kernels.md B4, B6).

    samples = dataset.load_dataset("data/train")                 # mesh helper's .npz samples
    result = train_um2n(samples, out="runs/um2n")                 # Adam(5e-5, wd 5e-4), batch 5
    model = result.model
    moved = move_mesh(model, mesh, monitor)                       # float64 [P, 2], zero-shot on any mesh size
    table = evaluate(model, dataset.load_dataset("data/test"))    # tangled cells, ER UM2N vs MA, time

`out` holds checkpoint.pt (written atomically after every epoch; a rerun with the same arguments resumes
it and ends bit-identical to an uninterrupted run; `epochs` may grow), train_log.jsonl (one JSON object per
epoch, rewritten from the checkpoint's history on resume so it never holds epochs the checkpoint lost) and
model.pt.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pyunlearn.mesh.losses import LossConfig, tangled_per_mesh, um2n_loss
from pyunlearn.mesh.model import UM2N, MeshBatch, UM2NConfig, boundary_keep_mask, make_batch, save_model

_CKPT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """UM2N training hyper-parameters. Defaults: the released run (B4; run_train.py)."""

    epochs: int = 1000
    batch_size: int = 5
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 5e-4
    seed: int = 666
    tangle_every: int = 10  # count tangled cells (on val if given, else train) every this many epochs
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "tangle_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be an int >= 0, got {self.seed!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not isinstance(self.loss, LossConfig):
            raise TypeError(f"TrainConfig.loss must be a LossConfig, got {type(self.loss).__name__}")


@dataclass
class TrainResult:
    model: UM2N
    history: list[dict]
    out: Path | None


def collate(parts: Sequence[MeshBatch]) -> MeshBatch:
    """Concatenate MeshBatches (e.g. single-mesh batches cached once) into one, shifting indices."""
    off_n, off_b = 0, 0
    ei, cells, batch, cbatch = [], [], [], []
    for p in parts:
        ei.append(p.edge_index + off_n)
        cells.append(p.cells + off_n)
        batch.append(p.batch + off_b)
        cbatch.append(p.cell_batch + off_b)
        off_n += len(p.coords)
        off_b += p.num_graphs
    cat = torch.cat
    target = cat([p.target for p in parts]) if all(p.target is not None for p in parts) else None
    return MeshBatch(cat([p.coords for p in parts]), cat([p.monitor for p in parts]),
                     cat([p.boundary for p in parts]), cat(ei, 1), cat(cells), cat(batch), cat(cbatch), off_b,
                     target)


def _singles(samples: Sequence[dict], dtype: torch.dtype, device, name: str) -> list[MeshBatch]:
    if len(samples) == 0:
        raise ValueError(f"{name} must hold at least one sample, got 0")
    out = []
    for i, s in enumerate(samples):
        try:
            out.append(make_batch([s], dtype=dtype, with_target=True, device=device))
        except (KeyError, ValueError) as e:
            raise type(e)(f"{name}[{i}]: {e}") from None
    return out


def _fingerprint(model_cfg: UM2NConfig, cfg: TrainConfig, n: int, dtype: torch.dtype) -> dict:
    """What must match for a checkpoint to be resumed (epochs may grow)."""
    d = dataclasses.asdict(cfg)
    d.pop("epochs")
    d["betas"] = list(d["betas"])
    m = dataclasses.asdict(model_cfg)
    m["deform_out"] = list(m["deform_out"])
    return {"train": d, "model": m, "num_samples": n, "dtype": str(dtype)}


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # readers see the old or the new checkpoint, never half a file


def _write_log(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    os.replace(tmp, path)


@torch.no_grad()
def _eval_loss(model: UM2N, parts: list[MeshBatch], cfg: TrainConfig) -> tuple[float, int]:
    """(mean loss over batches of cfg.batch_size, total tangled cells) in eval mode."""
    was = model.training
    model.eval()
    losses, tangled = [], 0
    for i in range(0, len(parts), cfg.batch_size):
        b = collate(parts[i:i + cfg.batch_size])
        pred = model(b)
        losses.append(float(um2n_loss(pred, b.target, b.cells, b.num_graphs, cfg.loss)["loss"]))
        tangled += int(tangled_per_mesh(pred, b.coords, b.cells, b.cell_batch, b.num_graphs).sum())
    model.train(was)
    return float(np.mean(losses)), tangled


def train_um2n(samples: Sequence[dict], *, model_config: UM2NConfig | None = None,
               config: TrainConfig | None = None, out: str | os.PathLike | None = None,
               val: Sequence[dict] | None = None, dtype: torch.dtype = torch.float32, device=None,
               progress: bool = True, callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a UM2N (built from model_config under torch.manual_seed(config.seed)) on dataset samples (dicts
    with points, cells, edge_index, boundary, monitor, target) with Adam and the B4 loss; returns the model in
    eval mode and the per-epoch history (epoch, loss, coord, vol, chamfer, seconds; val_loss when val is
    given; tangled every config.tangle_every epochs and at the last one).

    out: folder for checkpoint.pt / train_log.jsonl / model.pt; an existing checkpoint is resumed (model and
    training configs, sample count and dtype must match, else ValueError). callback(stats) after each
    epoch."""
    cfg = TrainConfig() if config is None else config
    model_cfg = UM2NConfig() if model_config is None else model_config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(model_cfg, UM2NConfig):
        raise TypeError(f"model_config must be a UM2NConfig, got {type(model_cfg).__name__}")
    train_parts = _singles(samples, dtype, device, "samples")
    val_parts = _singles(val, dtype, device, "val") if val else None
    out_dir = Path(out) if out is not None else None
    fp = _fingerprint(model_cfg, cfg, len(train_parts), dtype)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # dropout draws from torch's RNGs: seeded here, saved, restored
        torch.manual_seed(cfg.seed)
        model = UM2N(model_cfg).to(device=device, dtype=dtype)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                               weight_decay=cfg.weight_decay)
        shuffle = torch.Generator().manual_seed(cfg.seed + 1)
        start, history = 0, []
        ckpt = out_dir / "checkpoint.pt" if out_dir is not None else None
        if ckpt is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            if ckpt.exists():
                start, history = _resume(ckpt, fp, cfg, model, opt, shuffle, cuda)
            _write_log(out_dir / "train_log.jsonl", history)
        bar = tqdm(total=cfg.epochs, initial=start, desc="um2n", unit="ep", leave=False,
                   disable=None if progress else True, dynamic_ncols=True)
        try:
            for epoch in range(start, cfg.epochs):
                t0 = time.perf_counter()
                stats = _train_epoch(model, opt, train_parts, cfg, shuffle)
                stats = {"epoch": epoch + 1, **stats}
                last = epoch + 1 == cfg.epochs
                if val_parts is not None:
                    stats["val_loss"], tangled = _eval_loss(model, val_parts, cfg)
                if (epoch + 1) % cfg.tangle_every == 0 or last:
                    stats["tangled"] = (tangled if val_parts is not None
                                        else _eval_loss(model, train_parts, cfg)[1])
                stats["seconds"] = time.perf_counter() - t0
                history.append(stats)
                if ckpt is not None:
                    _save_atomic({"version": _CKPT_VERSION, "fingerprint": fp, "epoch": epoch + 1,
                                  "config": dataclasses.asdict(model_cfg), "model": model.state_dict(),
                                  "optimizer": opt.state_dict(), "shuffle_rng": shuffle.get_state(),
                                  "torch_rng": torch.get_rng_state(),
                                  "cuda_rng": [torch.cuda.get_rng_state(i) for i in cuda],
                                  "history": history}, ckpt)
                    with open(out_dir / "train_log.jsonl", "a") as f:
                        f.write(json.dumps(stats) + "\n")
                val_txt = f" val={stats['val_loss']:.4g}" if "val_loss" in stats else ""
                bar.set_postfix_str(f"loss={stats['loss']:.4g}{val_txt}", refresh=False)
                bar.update(1)
                if callback is not None:
                    callback(stats)
        finally:
            bar.close()
    model.eval()
    if out_dir is not None:
        save_model(model, out_dir / "model.pt", {"epochs": cfg.epochs})
    return TrainResult(model, history, out_dir)


def _train_epoch(model: UM2N, opt: torch.optim.Optimizer, parts: list[MeshBatch], cfg: TrainConfig,
                 shuffle: torch.Generator) -> dict:
    model.train()
    order = torch.randperm(len(parts), generator=shuffle).tolist()
    sums: dict[str, float] = {}
    n = 0
    for i in range(0, len(order), cfg.batch_size):
        b = collate([parts[j] for j in order[i:i + cfg.batch_size]])
        terms = um2n_loss(model(b), b.target, b.cells, b.num_graphs, cfg.loss)
        if not torch.isfinite(terms["loss"]):
            raise FloatingPointError(f"UM2N training loss became {float(terms['loss'])} (lr {cfg.lr} too "
                                     f"large?)")
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n += 1
    return {k: v / n for k, v in sums.items()}


def _resume(path: Path, fp: dict, cfg: TrainConfig, model: UM2N, opt: torch.optim.Optimizer,
            shuffle: torch.Generator, cuda: list[int]) -> tuple[int, list]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != _CKPT_VERSION:
        raise ValueError(f"checkpoint {str(path)!r} has format version {state.get('version')}, "
                         f"expected {_CKPT_VERSION}")
    if state["fingerprint"] != fp:
        old = state["fingerprint"]
        diff = sorted(k for k in fp if old.get(k) != fp[k])
        raise ValueError(f"checkpoint {str(path)!r} was written by a different run (it differs in {diff}); "
                         f"use another --out or delete it")
    if state["epoch"] > cfg.epochs:
        raise ValueError(f"checkpoint {str(path)!r} is at epoch {state['epoch']}, past epochs={cfg.epochs}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    shuffle.set_state(state["shuffle_rng"])
    torch.set_rng_state(state["torch_rng"])
    for i, st in zip(cuda, state["cuda_rng"]):
        torch.cuda.set_rng_state(st, i)
    return state["epoch"], state["history"]


# ------------------------------------------------------------------------------------------------------------
# Inference and evaluation
# ------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def move_points(model: UM2N, sample: dict) -> np.ndarray:
    """Moved vertex positions float64 [P, 2] of a sample dict (points, cells, edge_index, boundary, monitor).
    Coordinates the model keeps (boundary) are copied from the float64 input, so they are exact."""
    p = next(model.parameters())
    b = make_batch([sample], dtype=p.dtype, with_target=False, device=p.device)
    was = model.training
    model.eval()
    moved = model(b).double().cpu().numpy()
    model.train(was)
    keep = boundary_keep_mask(b, model.config.boundary).cpu().numpy()
    return np.where(keep, np.asarray(sample["points"], dtype=np.float64), moved)


def move_mesh(model: UM2N, mesh, monitor: np.ndarray) -> np.ndarray:
    """move_points for a geometry.Mesh and its monitor values [P]."""
    from pyunlearn.mesh.model import sample_from_mesh

    return move_points(model, sample_from_mesh(mesh, monitor))


@torch.no_grad()
def forward_ms(model: UM2N, sample: dict, repeats: int = 3) -> float:
    """Median wall time (ms) of one model forward on the sample (after a warm-up; batch built beforehand)."""
    p = next(model.parameters())
    b = make_batch([sample], dtype=p.dtype, with_target=False, device=p.device)
    was = model.training
    model.eval()
    model(b)
    times = []
    for _ in range(repeats):
        if p.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(b)
        if p.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    model.train(was)
    return float(np.median(times))


def evaluate(model: UM2N, samples: Sequence[dict], *, progress: bool = True) -> dict:
    """Per test sample: tangled cells of the UM2N mesh, ER of UM2N and of MA (%), UM2N forward ms vs the MA
    solver's ms; plus a summary. ER of UM2N comes from metrics.compare_errors (reference L2 error; NaN when
    tangled); ER and time of MA are the dataset's stored er_ma / ma_seconds."""
    from pyunlearn.mesh.geometry import Mesh
    from pyunlearn.mesh.metrics import compare_errors
    from pyunlearn.mesh.problems import HelmholtzProblem

    if len(samples) == 0:
        raise ValueError("samples must hold at least one test sample, got 0")
    rows = []
    for i, s in enumerate(tqdm(samples, desc="eval", leave=False, disable=None if progress else True)):
        mesh = Mesh(s["points"], s["cells"])
        moved = move_points(model, s)
        problem = HelmholtzProblem.from_arrays(s, equation=str(s.get("equation", "helmholtz")))
        rep = compare_errors(mesh, moved, problem, u_orig=s.get("u_h"))  # ER NaN when tangled
        rows.append({"sample": i, "n_points": mesh.n_points, "tangled": rep.tangled, "er_um2n": rep.er,
                     "er_ma": float(s["er_ma"]), "um2n_ms": forward_ms(model, s),
                     "ma_ms": 1e3 * float(s["ma_seconds"])})
    finite = [r["er_um2n"] for r in rows if math.isfinite(r["er_um2n"])]
    summary = {"samples": len(rows), "tangled_total": sum(r["tangled"] for r in rows),
               "meshes_tangled": sum(r["tangled"] > 0 for r in rows),
               "er_um2n_mean": float(np.mean(finite)) if finite else float("nan"),
               "er_ma_mean": float(np.mean([r["er_ma"] for r in rows])),
               "um2n_ms_median": float(np.median([r["um2n_ms"] for r in rows])),
               "ma_ms_median": float(np.median([r["ma_ms"] for r in rows]))}
    return {"summary": summary, "rows": rows}


def format_table(result: dict) -> str:
    """evaluate()'s result as a plain-text table."""
    head = (f"{'sample':>6} {'P':>6} {'tangled':>7} {'ER UM2N %':>10} {'ER MA %':>8} {'UM2N ms':>8} "
            f"{'MA ms':>9}")
    lines = [head]
    for r in result["rows"]:
        lines.append(f"{r['sample']:>6} {r['n_points']:>6} {r['tangled']:>7} {r['er_um2n']:>10.2f} "
                     f"{r['er_ma']:>8.2f} {r['um2n_ms']:>8.2f} {r['ma_ms']:>9.1f}")
    s = result["summary"]
    lines.append(f"mean ER UM2N {s['er_um2n_mean']:.2f} %, MA {s['er_ma_mean']:.2f} %; tangled cells "
                 f"{s['tangled_total']} in {s['meshes_tangled']}/{s['samples']} meshes; median time UM2N "
                 f"{s['um2n_ms_median']:.2f} ms vs MA {s['ma_ms_median']:.1f} ms")
    return "\n".join(lines)
