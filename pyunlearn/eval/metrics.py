"""Classifier-unlearning metrics (spec image_mu.md §2): UA, RA, TA, MIA-Efficacy and Avg. Gap.

All accuracies are top-1 in percent, computed in eval mode without gradients on the datasets as given (they
carry no augmentation). Every metric reads the model's softmax once per dataset: `evaluate` runs each of
forget / retain / test through the model exactly once and derives accuracies and MIA from those passes."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

METRICS = ("UA", "RA", "TA", "MIA")
SHADOWS = ("first", "random")


# ----------------------------------------------------------------------------------------------- model passes
def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_dataset(dataset, name: str) -> None:
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"{name} must be a map-style dataset of (x, y), got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{name} must not be empty, got a dataset of length 0")


def _collect(model: nn.Module, dataset, *, batch_size: int = 512,
             name: str = "dataset") -> tuple[Tensor, Tensor]:
    """Softmax probabilities [N, K] (float32) and labels [N] (int64) of `model` on `dataset`, on CPU.

    Eval mode and no grad; the train/eval mode of every submodule is restored afterwards. Labels must lie in
    [0, K) (e.g. a label-marking scheme's negative labels are rejected, not silently mis-scored)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_dataset(dataset, name)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = _model_device(model)
    modes = [(m, m.training) for m in model.modules()]
    probs, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    try:
        model.eval()
        with torch.no_grad():
            for batch in loader:
                if not isinstance(batch, (list, tuple)) or len(batch) != 2:
                    fields = f" with {len(batch)} fields" if isinstance(batch, (list, tuple)) else ""
                    raise TypeError(f"{name} must yield (x, y) pairs, "
                                    f"got items of {type(batch).__name__}{fields}")
                x, y = batch
                logits = model(x.to(device))
                if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(y):
                    got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                    raise ValueError(f"model must return logits of shape [B, K] (B = {len(y)}) on {name}, "
                                     f"got {got}")
                probs.append(torch.softmax(logits.float(), dim=1).cpu())  # [B, K]
                labels.append(torch.as_tensor(y).reshape(-1).to(torch.int64).cpu())  # [B]
    finally:
        for m, training in modes:
            m.training = training
    p = torch.cat(probs)  # [N, K]
    y = torch.cat(labels)  # [N]
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels of {name} must lie in [0, {p.shape[1]}) (the model's output width), "
                         f"got values in [{int(y.min())}, {int(y.max())}]")
    return p, y


def _probs(model: nn.Module, dataset, batch_size: int = 512) -> Tensor:
    """Softmax probabilities [N, K] of `model` on `dataset` (eval mode, no grad, mode restored)."""
    return _collect(model, dataset, batch_size=batch_size)[0]


def _acc(probs: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent. probs: [N, K], labels: [N]."""
    return 100.0 * (probs.argmax(dim=1) == labels).double().mean().item()


def _err(probs: Tensor, labels: Tensor) -> float:
    """Top-1 error in percent (UA): counted directly, not as 100 - accuracy, so 1/63 prints as 1.5873..., not
    1.5873...959."""
    return 100.0 * (probs.argmax(dim=1) != labels).double().mean().item()


def _confidence(probs: Tensor, labels: Tensor) -> np.ndarray:
    """The MIA feature: probability of the true label, p_y. probs: [N, K], labels: [N] -> float64 [N]."""
    return probs.gather(1, labels[:, None]).squeeze(1).double().numpy()


# ------------------------------------------------------------------------------------------------------ MIA
def _check_shadow(shadow: str, seed) -> None:
    if shadow not in SHADOWS:
        raise ValueError(f"shadow must be one of {SHADOWS}, got {shadow!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")


def _shadow_indices(n_retain: int, n_test: int, shadow: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into retain (members, label 1) and test (non-members, label 0), n = min(n_test, n_retain) each.

    "first": the first n of retain in dataset order (spec §2.2 step 1; the original takes all of test and
    assumes |retain| >= |test| — if retain is shorter we keep the sets balanced with the first n of test).
    "random": the Forget-Vector variant, np.random.RandomState(seed) subsets without replacement."""
    n = min(n_retain, n_test)
    if shadow == "first":
        return np.arange(n), np.arange(n)
    rng = np.random.RandomState(seed)
    return np.sort(rng.choice(n_retain, n, replace=False)), np.sort(rng.choice(n_test, n, replace=False))


def _mia(conf_forget: np.ndarray, conf_retain: np.ndarray, conf_test: np.ndarray, *, shadow: str, seed: int,
         retain_is_shadow: bool = False) -> float:
    """MIA-Efficacy from confidences: SVC(C=3, rbf, gamma="auto") fit on members (retain) vs non-members
    (test), percent of forget predicted non-member. retain_is_shadow: conf_retain holds exactly the
    members."""
    from sklearn.svm import SVC  # scikit-learn is only needed for this metric

    if retain_is_shadow:
        members, non_members = conf_retain, conf_test
    else:
        i_r, i_t = _shadow_indices(len(conf_retain), len(conf_test), shadow, seed)
        members, non_members = conf_retain[i_r], conf_test[i_t]
    x = np.concatenate([members, non_members])[:, None]  # [2n, 1]
    y = np.concatenate([np.ones(len(members), dtype=np.int64), np.zeros(len(non_members), dtype=np.int64)])
    clf = SVC(C=3, kernel="rbf", gamma="auto")
    clf.fit(x, y)
    pred = clf.predict(conf_forget[:, None])  # [|forget|]
    return 100.0 * float(np.mean(pred == 0))


def mia_efficacy(model: nn.Module, forget, retain, test, *, shadow: str = "first", seed: int = 0,
                 batch_size: int = 512) -> float:
    """MIA-Efficacy in percent (spec §2.2): the share of forget samples a membership classifier calls
    non-members.

    The feature is the softmax confidence of the true label, p_y (eval mode, no grad). Shadow members S1 come
    from `retain`, non-members S0 from `test`, n = min(|test|, |retain|) each (balanced):
    shadow="first" takes the first n samples in dataset order (the published protocol; n = |test| whenever
    retain is the larger set, as in every paper setting); shadow="random" takes seeded random subsets
    (np.random.RandomState(seed), the Forget-Vector variant). An sklearn SVC(C=3, kernel="rbf", gamma="auto")
    is fit on {(p_y, 1) for S1} U {(p_y, 0) for S0} and the result is 100 * mean(SVC(p_y) == 0) over `forget`.
    Higher is not better by itself: the target is Retrain's value (hence Avg. Gap).

    For class-wise forgetting pass the test set without the forgotten class (what `evaluate` does)."""
    _check_shadow(shadow, seed)
    for name, ds in (("forget", forget), ("retain", retain), ("test", test)):
        _check_dataset(ds, name)
    i_r, i_t = _shadow_indices(len(retain), len(test), shadow, int(seed))
    # Only the shadow samples are run through the model: retain can be far larger than test.
    pf, yf = _collect(model, forget, batch_size=batch_size, name="forget")
    pr, yr = _collect(model, Subset(retain, i_r.tolist()), batch_size=batch_size, name="retain")
    pt, yt = _collect(model, Subset(test, i_t.tolist()), batch_size=batch_size, name="test")
    return _mia(_confidence(pf, yf), _confidence(pr, yr), _confidence(pt, yt), shadow=shadow, seed=int(seed),
                retain_is_shadow=True)


# ------------------------------------------------------------------------------------------------- evaluate
def evaluate(model: nn.Module, fs, splits, *, shadow: str = "first", seed: int = 0,
             batch_size: int = 512) -> dict:
    """UA, RA, TA and MIA-Efficacy (all percent) of `model` for forget set `fs` of `splits` (spec §2.1-2.2).

    UA = 100 - Acc(fs.forget), RA = Acc(fs.retain), TA = Acc(splits.test), MIA = mia_efficacy(...).
    Class-wise forgetting (fs.kind == "class"): the test set is filtered to the labels != fs.forget_class;
    that filtered set gives TA AND is the MIA non-member shadow set S0 (n_test = its size), as in the
    published protocol. The result then also carries "TA_forget_class", the test accuracy on the forgotten
    class (None when the test set has no sample of it). Other kinds ("random", "indices") use the whole test
    set, even when the indices happen to cover a whole class (only kind decides, spec §2.6-2).
    Keys: UA, RA, TA, MIA [, TA_forget_class]. shadow/seed: see mia_efficacy. Each of forget, retain and test
    is run through the model once."""
    _check_shadow(shadow, seed)
    for attr in ("kind", "forget", "retain", "forget_class"):
        if not hasattr(fs, attr):
            raise TypeError(f"fs must be a ForgetSet (with .{attr}), got {type(fs).__name__}")
    if not hasattr(splits, "test"):
        raise TypeError(f"splits must be a DataSplits (with .test), got {type(splits).__name__}")
    c = fs.forget_class
    if fs.kind == "class" and (isinstance(c, bool) or not isinstance(c, (int, np.integer))):
        raise ValueError(f"fs.forget_class must be an int when fs.kind == 'class', got {fs.forget_class!r}")
    pf, yf = _collect(model, fs.forget, batch_size=batch_size, name="fs.forget")
    pr, yr = _collect(model, fs.retain, batch_size=batch_size, name="fs.retain")
    pt, yt = _collect(model, splits.test, batch_size=batch_size, name="splits.test")
    out = {}
    if fs.kind == "class":
        keep = yt != int(fs.forget_class)  # [N_test]
        if not bool(keep.any()):
            raise ValueError(f"splits.test has no sample outside the forgotten class {fs.forget_class}: "
                             "TA and the MIA non-member set would be empty")
        drop = ~keep
        out["TA_forget_class"] = _acc(pt[drop], yt[drop]) if bool(drop.any()) else None
        pt, yt = pt[keep], yt[keep]
    metrics = {
        "UA": _err(pf, yf),
        "RA": _acc(pr, yr),
        "TA": _acc(pt, yt),
        "MIA": _mia(_confidence(pf, yf), _confidence(pr, yr), _confidence(pt, yt), shadow=shadow,
                    seed=int(seed)),
    }
    metrics.update(out)
    return metrics


# -------------------------------------------------------------------------------------------------- Avg. Gap
def _metric_value(metrics, key: str, name: str) -> float:
    if not isinstance(metrics, dict):
        raise TypeError(f"{name} must be a dict with keys {METRICS}, got {type(metrics).__name__}")
    if key not in metrics:
        raise ValueError(f"{name} must have keys {METRICS}, missing {key!r} (got {sorted(metrics)})")
    v = metrics[key]
    if isinstance(v, bool) or not isinstance(v, Real):
        raise TypeError(f"{name}[{key!r}] must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{name}[{key!r}] must be finite, got {v!r}")
    return float(v)


def avg_gap(metrics: dict, retrain: dict) -> float:
    """Avg. Gap (spec §2.5) = mean over UA, RA, TA, MIA of |metrics[k] - retrain[k]|; 0 for Retrain itself."""
    return sum(abs(_metric_value(metrics, k, "metrics") - _metric_value(retrain, k, "retrain"))
               for k in METRICS) / len(METRICS)


__all__ = ["METRICS", "avg_gap", "evaluate", "mia_efficacy"]
