"""The evaluation protocol end to end (image_mu.md §1-2): one seeded split, the original model trained on its
train part, forget sets drawn from that same train part, every method run from the same original model and
scored with UA/RA/TA/MIA/RTE and the gap to Retrain on the same forget set.

Nothing is lost on interruption: the original model's training is checkpointed every epoch, every (task, method,
seed) lands in runs.json as it finishes, and results.json (the means over seeds) after every (task, method); a
rerun with the same out_dir resumes where it stopped."""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from pyunlearn.unlearn._common import METHODS, make_config, unlearn

DEMO_TASKS = ("class:3", "random:0.1")
DEMO_METHODS = ("retrain", "ft", "ga", "rl", "l1_sparse", "salun", "ugradsl")


@dataclass
class Experiment:
    """What to run on a DataSplits (whose split seed is part of it). configs: {method: {option: value}} overriding a method's defaults. prune: None (dense) or
    "omp" | "imp" | "synflow", optionally with a rate ("omp:0.9"; default 0.95): the original model is the
    sparse θ_o^s of Unlearn-Sparse and every method (Retrain included) runs on it with the mask kept."""

    tasks: tuple[str, ...] = DEMO_TASKS
    methods: tuple[str, ...] = DEMO_METHODS
    model: str = "cnn"
    forget_seed: int = 1
    init_seed: int = 1
    seed: int = 0
    configs: dict = field(default_factory=dict)
    prune: Optional[str] = None
    seeds: int = 1  # repeats s = 0..seeds-1: forget set drawn with forget_seed + s, method randomness seed + s


    def __post_init__(self):
        self.tasks, self.methods = tuple(self.tasks), tuple(self.methods)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be an int >= 1, got {self.seeds!r}")
        if not self.tasks:
            raise ValueError("tasks must name at least one forget set, e.g. ('class:3',), got none")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"methods must be among {sorted(METHODS)}, got {m!r}")
        for m, cfg in self.configs.items():
            make_config(m, **cfg)  # unknown methods/options fail here, before any training
        if self.prune is not None:
            self.prune_method_rate()
        if "retrain" not in self.methods:
            raise ValueError("methods must include 'retrain': Avg. Gap is measured against it")
        self.methods = ("retrain",) + tuple(m for m in self.methods if m != "retrain")

    def prune_method_rate(self) -> tuple[str, float]:
        from pyunlearn.unlearn.prune import METHODS as PRUNERS

        name, _, rate = self.prune.partition(":")
        if name not in PRUNERS:
            raise ValueError(f"prune must be one of {PRUNERS} with an optional ':rate', got {self.prune!r}")
        try:
            value = float(rate) if rate else 0.95
        except ValueError:
            raise ValueError(f"prune rate must be a number in [0, 1), got {rate!r} in {self.prune!r}") from None
        if not 0 <= value < 1:
            raise ValueError(f"prune rate must be a number in [0, 1), got {value} in {self.prune!r}")
        return name, value


def run(splits, exp: Experiment, out_dir: os.PathLike, *, progress: bool = True, log=print):
    """Run every (task, method, seed) of `exp` on `splits`; returns pyunlearn.eval.Results of the means over the
    seeds (Avg. Gap between the means; also in out_dir: results.json, runs.json with every seed's metrics,
    results.png, original.pt, experiment.json)."""
    from pyunlearn.data import select_forget
    from pyunlearn.eval import Results, evaluate
    from pyunlearn.train import accuracy, train_original

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_experiment(out / "experiment.json", exp, splits)
    original = _original_model(splits, exp, out, progress, log)
    log(f"original model: test accuracy {accuracy(original, splits.test):.2f}%")

    results_path, runs_path = out / "results.json", out / "runs.json"
    results = Results.from_json(results_path) if results_path.exists() else Results()
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    for task in exp.tasks:
        forget_sets = {}
        for method in exp.methods:
            if method in results.data.get(task, {}):
                log(f"[{task}] {method}: done in an earlier run, kept")
                continue
            done = runs.setdefault(task, {}).setdefault(method, {})
            for s in range(exp.seeds):
                if str(s) in done:
                    continue
                if s not in forget_sets:
                    forget_sets[s] = select_forget(splits, task, seed=exp.forget_seed + s)
                fs = forget_sets[s]
                model, record = unlearn(original, fs.forget, fs.retain, method, num_classes=splits.num_classes,
                                        augment=splits.augment, seed=exp.seed + s, init_seed=exp.init_seed,
                                        progress=progress, **exp.configs.get(method, {}))
                metrics = {k: v for k, v in evaluate(model, fs, splits).items() if v is not None}
                done[str(s)] = {**metrics, "RTE": record.seconds}
                _write_json(runs_path, runs)
                log(f"[{task}] {method}" + (f" seed {s}" if exp.seeds > 1 else "") + ": "
                    + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) + f", RTE {record.seconds:.1f}s")
            mean = {k: sum(r[k] for r in done.values()) / len(done) for k in ("UA", "RA", "TA", "MIA", "RTE")}
            results.add(task, method, mean, mean["RTE"])
            results.finalize()
            results.to_json(results_path)
    results.finalize()
    results.to_json(results_path)
    results.plot(out / "results.png")
    return results


def spread(out_dir: os.PathLike) -> dict:
    """{task: {method: {metric: standard deviation over the seeds}}} from out_dir/runs.json (0 for one seed)."""
    runs = json.loads((Path(out_dir) / "runs.json").read_text())
    metrics = ("UA", "RA", "TA", "MIA")
    return {task: {method: {k: statistics.pstdev(r[k] for r in per_seed.values()) for k in metrics}
                   for method, per_seed in methods.items() if per_seed}
            for task, methods in runs.items()}


def spread_table(out_dir: os.PathLike) -> str:
    """The standard deviations over seeds as a text table, one block per task."""
    lines = []
    for task, methods in spread(out_dir).items():
        lines += [f"task: {task} (standard deviation over seeds)",
                  f"{'method':<14}" + "".join(f"{k:>9}" for k in ("UA", "RA", "TA", "MIA"))]
        lines += [f"{m:<14}" + "".join(f"{v:9.2f}" for v in sd.values()) for m, sd in methods.items()]
        lines.append("")
    return "\n".join(lines).rstrip()


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _original_model(splits, exp: Experiment, out: Path, progress: bool, log) -> nn.Module:
    from pyunlearn.models import build_model
    from pyunlearn.train import train_original

    from pyunlearn.unlearn import prune

    final = out / "original.pt"
    if final.exists():
        model = build_model(exp.model, splits.num_classes, splits.input_shape, seed=exp.init_seed)
        state = torch.load(final, weights_only=True)
        masks = prune.masks_from_state_dict(state)
        if masks:
            prune.apply_masks(model, masks)
        model.load_state_dict(state)
        log(f"original model: loaded {final}")
        return model
    if exp.prune is None:
        model = train_original(splits, exp.model, seed=exp.init_seed, checkpoint=out / "original.ckpt",
                               progress=progress)
    else:
        method, rate = exp.prune_method_rate()
        model = train_original(splits, exp.model, seed=exp.init_seed, progress=progress, prune=method,
                               prune_rate=rate)
        log(f"original model: {method} pruned, sparsity {prune.sparsity(model):.3f}")
    tmp = final.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, final)
    (out / "original.ckpt").unlink(missing_ok=True)
    return model


def _check_same_experiment(path: Path, exp: Experiment, splits) -> None:
    """A rerun into the same folder must describe the same experiment, or resumed rows would mix setups."""
    desc = {"data": splits.name, "split_seed": splits.split_seed, **asdict(exp)}
    desc = json.loads(json.dumps(desc))  # tuples -> lists, as stored
    if path.exists():
        old = json.loads(path.read_text())
        keys = ("data", "split_seed", "model", "forget_seed", "init_seed", "seed", "configs", "prune", "seeds")
        diff = [k for k in keys if old.get(k) != desc.get(k)]
        if diff:
            raise ValueError(f"out_dir {path.parent} holds results of a different experiment ({', '.join(diff)} "
                             f"differ); use another --out or delete it")
    path.write_text(json.dumps(desc, indent=1))
