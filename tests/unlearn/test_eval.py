"""pyunlearn.eval: metric definitions on constructed models whose outputs are known exactly, MIA behaviour on
separable confidences, class-wise test filtering, Avg. Gap, and Results (table, JSON round trip, figure)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from pyunlearn.eval import Results, avg_gap, evaluate, mia_efficacy
from pyunlearn.eval.metrics import _probs


class TableModel(nn.Module):
    """Returns a fixed logit row per sample id: inputs are x = [id] (float), output logits[id]."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits.float())  # [N, K]
        self.child = nn.Identity()
        self.seen_training: list[bool] = []

    def forward(self, x):  # x: [B, 1]
        self.seen_training.append(self.training)
        return self.logits[x[:, 0].long()]


def _ids(idx) -> torch.Tensor:
    return torch.as_tensor(idx, dtype=torch.float32)[:, None]  # [N, 1]


def _confidence_logits(p: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose softmax gives the true label (class 1) probability p. p: [N] -> [N, 2]."""
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def _forget_set(kind, forget, retain, forget_class=None):
    return SimpleNamespace(kind=kind, forget=forget, retain=retain, forget_class=forget_class,
                           forget_indices=torch.arange(len(forget)), seed=0)


# --------------------------------------------------------------------------------------------- accuracies
def _accuracy_case():
    """30 samples, 3 classes: forget = ids 0-9 (3 correct), retain = 10-19 (8 correct), test = 20-29
    (6 correct)."""
    y = torch.tensor([0, 1, 2] * 10)
    pred = y.clone()
    wrong = [*range(3, 10), 18, 19, 20, 23, 25, 28]  # 7 forget, 2 retain, 4 test mistakes
    pred[wrong] = (y[wrong] + 1) % 3
    logits = torch.nn.functional.one_hot(pred, 3).float() * 5.0
    data = TensorDataset(_ids(range(30)), y)
    return TableModel(logits), data, y


def test_accuracy_metrics_exact():
    model, data, _ = _accuracy_case()
    fs = _forget_set("random", Subset(data, range(10)), Subset(data, range(10, 20)))
    m = evaluate(model, fs, SimpleNamespace(test=Subset(data, range(20, 30))))
    assert set(m) == {"UA", "RA", "TA", "MIA"}
    assert m["UA"] == pytest.approx(70.0)
    assert m["RA"] == pytest.approx(80.0)
    assert m["TA"] == pytest.approx(60.0)
    assert 0.0 <= m["MIA"] <= 100.0


def test_classwise_test_set_excludes_forgotten_class():
    model, data, y = _accuracy_case()
    test_ids = list(range(20, 30))
    # test ids 20..29 have labels 2,0,1,2,0,1,2,0,1,2: wrong are 20 (2), 23 (2), 25 (1), 28 (1)
    fs = _forget_set("class", Subset(data, range(10)), Subset(data, range(10, 20)), forget_class=2)
    m = evaluate(model, fs, SimpleNamespace(test=Subset(data, test_ids)))
    keep = [i for i in test_ids if y[i] != 2]  # 6 samples, 2 wrong
    assert m["TA"] == pytest.approx(100 * 4 / 6)
    assert m["TA_forget_class"] == pytest.approx(100 * 2 / 4)  # class 2 in test: 20, 23 wrong; 26, 29 right
    # the MIA non-member shadow set is the filtered test set too
    assert m["MIA"] == pytest.approx(mia_efficacy(model, fs.forget, fs.retain, Subset(data, keep)))
    # the same sets as kind="indices" keep the whole test set (only kind decides)
    splits = SimpleNamespace(test=Subset(data, test_ids))
    m2 = evaluate(model, _forget_set("indices", fs.forget, fs.retain), splits)
    assert m2["TA"] == pytest.approx(60.0) and "TA_forget_class" not in m2


def test_probs_eval_mode_restored():
    model, data, _ = _accuracy_case()
    model.train()
    model.child.eval()  # mixed modes survive
    p = _probs(model, data, batch_size=7)
    assert p.shape == (30, 3) and torch.allclose(p.sum(1), torch.ones(30))
    assert model.seen_training and not any(model.seen_training)
    assert model.training and not model.child.training


# ------------------------------------------------------------------------------------------------------ MIA
def _mia_case(forget_p, n_retain=60, n_test=40, member_p=0.97, non_member_p=0.35):
    """Members (retain) at confidence ~member_p, non-members (test) at ~non_member_p (small jitter), forget at
    the given confidences. Returns model, forget, retain, test."""
    g = torch.Generator().manual_seed(0)
    def jitter(n):
        return (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 0.04

    p = torch.cat([member_p + jitter(n_retain), non_member_p + jitter(n_test),
                   torch.as_tensor(forget_p).double()])
    n = len(p)
    data = TensorDataset(_ids(range(n)), torch.ones(n, dtype=torch.int64))
    model = TableModel(_confidence_logits(p))
    retain = Subset(data, range(n_retain))
    test = Subset(data, range(n_retain, n_retain + n_test))
    forget = Subset(data, range(n_retain + n_test, n))
    return model, forget, retain, test


@pytest.mark.parametrize("shadow", ["first", "random"])
def test_mia_separable_confidences(shadow):
    model, forget, retain, test = _mia_case([0.97] * 10)
    assert mia_efficacy(model, forget, retain, test, shadow=shadow) == pytest.approx(0.0)
    model, forget, retain, test = _mia_case([0.35] * 10)
    assert mia_efficacy(model, forget, retain, test, shadow=shadow) == pytest.approx(100.0)
    model, forget, retain, test = _mia_case([0.97] * 3 + [0.35] * 7)
    assert mia_efficacy(model, forget, retain, test, shadow=shadow) == pytest.approx(70.0)


def test_mia_first_shadow_uses_dataset_order():
    """Only the first |test| retain samples are members of the shadow set: the later ones (at the non-member
    confidence) must not enter it, or forget samples at that confidence would look like members."""
    n_test = 30
    p = torch.cat([torch.full((n_test,), 0.97), torch.full((50,), 0.35),  # retain: first 30 member-like
                   torch.full((n_test,), 0.35),  # test
                   torch.full((10,), 0.35)]).double()  # forget: non-member-like
    p = p + torch.linspace(-0.01, 0.01, len(p), dtype=torch.float64)
    data = TensorDataset(_ids(range(len(p))), torch.ones(len(p), dtype=torch.int64))
    model = TableModel(_confidence_logits(p))
    retain, test = Subset(data, range(80)), Subset(data, range(80, 110))
    forget = Subset(data, range(110, 120))
    assert mia_efficacy(model, forget, retain, test, shadow="first") == pytest.approx(100.0)
    # the random variant mixes in late retain samples; it is seeded, hence reproducible
    r = [mia_efficacy(model, forget, retain, test, shadow="random", seed=3) for _ in range(2)]
    assert r[0] == r[1]


def test_evaluate_mia_matches_mia_efficacy():
    model, forget, retain, test = _mia_case([0.97] * 4 + [0.35] * 6)
    fs = _forget_set("random", forget, retain)
    m = evaluate(model, fs, SimpleNamespace(test=test), shadow="random", seed=5)
    assert m["MIA"] == pytest.approx(60.0)
    assert m["MIA"] == mia_efficacy(model, forget, retain, test, shadow="random", seed=5)
    assert m["UA"] == 60.0 and m["RA"] == 100.0 and m["TA"] == 0.0  # two logits: p_y > 0.5 iff correct


def test_retain_smaller_than_test_stays_balanced():
    model, forget, retain, test = _mia_case([0.97] * 5 + [0.35] * 5, n_retain=12, n_test=40)
    assert mia_efficacy(model, forget, retain, test) == pytest.approx(50.0)


# ----------------------------------------------------------------------------------------------- Avg. Gap
def test_avg_gap_hand_computed():
    retrain = {"UA": 5.24, "RA": 100.0, "TA": 94.26, "MIA": 12.88}
    ft = {"UA": 0.63, "RA": 99.88, "TA": 94.06, "MIA": 2.70, "RTE": 1.0}
    assert avg_gap(ft, retrain) == pytest.approx((4.61 + 0.12 + 0.20 + 10.18) / 4)  # 3.7775, SalUn's 3.78
    assert avg_gap(retrain, retrain) == 0.0


# ---------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs():
    model, forget, retain, test = _mia_case([0.97] * 3)
    empty = Subset(test, [])
    for args, name in (((empty, retain, test), "forget"), ((forget, empty, test), "retain"),
                       ((forget, retain, empty), "test")):
        with pytest.raises(ValueError, match=name):
            mia_efficacy(model, *args)
    with pytest.raises(ValueError, match="shadow"):
        mia_efficacy(model, forget, retain, test, shadow="last")
    with pytest.raises(TypeError, match="model"):
        mia_efficacy(lambda x: x, forget, retain, test)
    with pytest.raises(TypeError, match="forget"):
        mia_efficacy(model, [1, 2, 3], retain, test)
    bad_labels = TensorDataset(_ids([0, 1]), torch.tensor([1, -2]))
    with pytest.raises(ValueError, match=r"labels of forget must lie in \[0, 2\)"):
        mia_efficacy(model, bad_labels, retain, test)

    class Flat(nn.Module):
        def forward(self, x):
            return x[:, 0]

    with pytest.raises(ValueError, match=r"\[B, K\]"):
        mia_efficacy(Flat(), forget, retain, test)
    with pytest.raises(ValueError, match="missing 'MIA'"):
        avg_gap({"UA": 1, "RA": 1, "TA": 1}, {"UA": 1, "RA": 1, "TA": 1, "MIA": 1})
    with pytest.raises(TypeError, match=r"retrain\['UA'\]"):
        avg_gap({"UA": 1, "RA": 1, "TA": 1, "MIA": 1}, {"UA": "1", "RA": 1, "TA": 1, "MIA": 1})
    with pytest.raises(TypeError, match="fs"):
        evaluate(model, object(), SimpleNamespace(test=test))
    fs = _forget_set("class", forget, retain, forget_class=1)  # every test label is 1: nothing left
    with pytest.raises(ValueError, match="forgotten class"):
        evaluate(model, fs, SimpleNamespace(test=test))


# ------------------------------------------------------------------------------------------------ Results
def _results() -> Results:
    r = Results()
    r.add("random:0.1", "ft", {"UA": 0.63, "RA": 99.88, "TA": 94.06, "MIA": 2.70}, 2.37)
    r.add("random:0.1", "retrain", {"UA": 5.24, "RA": 100.0, "TA": 94.26, "MIA": 12.88}, 43.29)
    r.add("random:0.1", "salun", {"UA": 2.85, "RA": 99.62, "TA": 93.93, "MIA": 14.39, "TA_forget_class": 1.0},
          2.66)
    r.add("class:3", "ga", {"UA": 93.08, "RA": 92.6, "TA": 86.64, "MIA": 94.03}, 0.3)
    return r


def test_results_finalize_and_table():
    r = _results().finalize()
    rnd = r.data["random:0.1"]
    assert rnd["retrain"]["avg_gap"] == 0.0
    assert rnd["ft"]["avg_gap"] == pytest.approx(3.7775)
    assert rnd["salun"]["avg_gap"] == pytest.approx((2.39 + 0.38 + 0.33 + 1.51) / 4)
    assert r.data["class:3"]["ga"]["avg_gap"] is None  # no Retrain for that task
    assert set(rnd["salun"]) == {"UA", "RA", "TA", "MIA", "RTE", "avg_gap"}

    lines = r.table().splitlines()
    assert lines[0] == "task: random:0.1"
    assert lines[3].split()[0] == "retrain" and lines[4].split()[0] == "ft"  # Retrain first, then insertion
    assert lines[4].split() == ["ft", "0.63", "99.88", "94.06", "2.70", "2.37", "3.78"]
    assert len({len(line) for line in lines[1:6]}) == 1  # fixed width
    assert "task: class:3" in lines and lines[-1].split()[-1] == "-"


def test_results_add_refreshes_gap():
    r = Results()
    r.add("t", "ft", {"UA": 1, "RA": 2, "TA": 3, "MIA": 4}, 1.0)
    assert "-" == r.table().splitlines()[-1].split()[-1]  # no Retrain yet
    r.add("t", "retrain", {"UA": 1, "RA": 2, "TA": 3, "MIA": 8}, 9.0)
    assert r.to_dict()["t"]["ft"]["avg_gap"] == 1.0  # table/to_json finalize what was added since


def test_results_json_round_trip(tmp_path):
    r = _results()
    path = r.to_json(tmp_path / "out" / "results.json")
    raw = json.loads(path.read_text())
    assert list(raw) == ["random:0.1", "class:3"]
    assert raw["random:0.1"]["ft"] == {"UA": 0.63, "RA": 99.88, "TA": 94.06, "MIA": 2.7, "RTE": 2.37,
                                       "avg_gap": 3.7775}
    assert raw["class:3"]["ga"]["avg_gap"] is None
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left behind
    back = Results.from_json(path)
    assert back.to_dict() == raw == r.to_dict() and back.table() == r.table()


def test_results_resumed_from_json_matches(tmp_path):
    """A run that saves, reloads and continues produces the same file as one that never left memory."""
    third = {k: 100 / 3 + i / 7 for i, k in enumerate(("UA", "RA", "TA", "MIA"))}
    sevenths = {k: 100 / 7 + i / 3 for i, k in enumerate(("UA", "RA", "TA", "MIA"))}
    a = Results()
    a.add("t", "retrain", third, 10 / 3)
    b = Results.from_json(a.to_json(tmp_path / "a.json"))
    for r in (a, b):
        r.add("t", "ft", sevenths, 1 / 7)
    assert a.to_json(tmp_path / "a.json").read_text() == b.to_json(tmp_path / "b.json").read_text()
    assert a.data == b.data  # in memory too: stored values are the saved ones


def test_results_bad_inputs(tmp_path):
    r = _results()
    with pytest.raises(ValueError, match="already has"):
        r.add("random:0.1", "ft", {"UA": 0, "RA": 0, "TA": 0, "MIA": 0}, 1.0)
    with pytest.raises(ValueError, match="missing"):
        r.add("t", "m", {"UA": 0, "RA": 0, "TA": 0}, 1.0)
    with pytest.raises(ValueError, match="rte"):
        r.add("t", "m", {"UA": 0, "RA": 0, "TA": 0, "MIA": 0}, -1.0)
    with pytest.raises(ValueError, match="finite"):
        r.add("t", "m", {"UA": math.nan, "RA": 0, "TA": 0, "MIA": 0}, 1.0)
    with pytest.raises(TypeError, match="task"):
        r.add("", "m", {"UA": 0, "RA": 0, "TA": 0, "MIA": 0}, 1.0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"t": {"m": {"UA": 1, "RA": 2, "TA": 3, "MIA": 4}}}))
    with pytest.raises(ValueError, match=r"\['t'\]\['m'\]"):
        Results.from_json(bad)
    with pytest.raises(ValueError, match="empty"):
        Results().plot(tmp_path / "x.png")


def test_results_plot_written(tmp_path):
    r = _results()
    r.add("random:0.1", "ga", {"UA": 0.69, "RA": 99.5, "TA": 94.01, "MIA": 1.7}, None)  # RTE unknown
    path = r.plot(tmp_path / "fig" / "results.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
