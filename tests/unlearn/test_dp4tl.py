"""pyunlearn.transfer (DP4TL, spec §3.15): LM / FM scores rank the target-relevant source classes first on a
case whose answer is known exactly; the intended nearest-centroid FM rule vs the public code's slot bug;
keep_classes; the digits pipeline end to end; bad input; the CLI."""

import argparse
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pyunlearn.models import SmallCNN
from pyunlearn.train import TrainConfig
from pyunlearn.transfer import (
    DP4TLConfig,
    SourceScores,
    add_cli,
    class_centroids,
    digits_rotation_task,
    extract_features,
    fm_scores,
    keep_classes,
    lm_scores,
    nearest_centroid,
    num_kept,
    run_dp4tl,
)

K_S, D = 6, 6
MU = 5.0 * torch.eye(K_S, D)  # [K_s, D] known source-class centroids


def nearest_centroid_net(mu: torch.Tensor) -> nn.Module:
    """Flatten -> Linear with logits_c = 2 mu_c.x - |mu_c|^2 = |x|^2 - |x - mu_c|^2: argmax = nearest centroid,
    and the penultimate activation (the Linear's input) is x itself."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(mu.shape[1], mu.shape[0]))
    with torch.no_grad():
        net[1].weight.copy_(2 * mu)
        net[1].bias.copy_(-(mu**2).sum(1))
    return net


def _near(classes: list[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU[classes] + 0.3 * torch.randn(len(classes), D, generator=g)  # noise << centroid distance (7.07)


@pytest.fixture(scope="module")
def synthetic():
    y_s = torch.arange(K_S).repeat_interleave(20)  # [120]
    source = TensorDataset(_near(y_s.tolist(), 0), y_s)
    # target drawn near source classes 4 (7 samples) and 1 (3 samples): the relevant ones, 4 before 1
    t_cls = [4] * 7 + [1] * 3
    target = TensorDataset(_near(t_cls, 1), torch.zeros(10, dtype=torch.int64))
    return source, target


def test_lm_ranks_relevant_classes_first(synthetic):
    _, target = synthetic
    s = lm_scores(nearest_centroid_net(MU), target, K_S)
    assert isinstance(s, SourceScores)
    assert s.scores.tolist() == [0, 3, 0, 0, 7, 0]
    assert s.ranking.tolist() == [4, 1, 0, 2, 3, 5]  # ties in ascending class order
    assert keep_classes(s, 2) == [1, 4]
    assert keep_classes(s, 1 / 3) == [1, 4]


def test_fm_ranks_relevant_classes_first(synthetic):
    source, target = synthetic
    s = fm_scores(nearest_centroid_net(MU), source, target)  # feature_layer="auto": the Linear's input = x
    assert s.scores.tolist() == [0, 3, 0, 0, 7, 0]
    assert s.ranking[:2].tolist() == [4, 1]
    # the callable and module-name forms pick the same features here
    s2 = fm_scores(nearest_centroid_net(MU), source, target, feature_layer="0")
    s3 = fm_scores(nearest_centroid_net(MU), source, target, feature_layer=lambda x: x.flatten(1))
    assert s2.scores.tolist() == s3.scores.tolist() == s.scores.tolist()


def _public_slot_bug(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The public DP4TL FM loop (spec §3.15 [C]): every distance goes into slot i (the SAMPLE index) instead
    of slot c, so the argmin sees zeros everywhere but one slot. Reproduced here only to show the difference."""
    out = []
    for i, f in enumerate(features):
        dist = torch.zeros(max(len(centroids), len(features)))
        for c in range(len(centroids)):
            dist[i] = torch.linalg.vector_norm(f - centroids[c])  # the bug: [i], not [c]
        out.append(int(dist[: len(centroids)].argmin()))
    return torch.tensor(out)


def test_fm_nearest_centroid_rule_vs_public_slot_bug():
    centroids = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])  # [3, 2]
    feats = torch.tensor([[0.0, 9.0], [1.0, 9.5], [0.5, 11.0]])  # all nearest to centroid 2
    assert nearest_centroid(feats, centroids).tolist() == [2, 2, 2]
    assert _public_slot_bug(feats, centroids).tolist() == [1, 0, 0]  # collapses to 0/1


def test_class_centroids_and_absent_classes():
    f = torch.tensor([[0.0, 0.0], [2.0, 2.0], [10.0, 0.0]])
    y = torch.tensor([0, 0, 2])
    mu = class_centroids(f, y, 3)
    assert torch.equal(mu[0], torch.tensor([1.0, 1.0])) and torch.equal(mu[2], torch.tensor([10.0, 0.0]))
    assert torch.isnan(mu[1]).all()
    assert nearest_centroid(torch.tensor([[9.0, 0.0], [0.0, 1.0]]), mu).tolist() == [2, 0]  # NaN never wins


def test_keep_classes():
    s = torch.tensor([5, 1, 5, 0, 3])
    assert keep_classes(s, 2) == [0, 2]
    assert keep_classes(s, 3) == [0, 2, 4]
    assert keep_classes(s, 1.0) == [0, 1, 2, 3, 4]
    assert keep_classes(s, 0.01) == [0]  # at least one class
    assert keep_classes(s, 0.4) == [0, 2]
    assert keep_classes(s, 2, reverse=True) == [1, 3]
    assert keep_classes(torch.tensor([1, 1, 1]), 2, reverse=True) == [0, 1]  # ties: lower id
    assert keep_classes(SourceScores(s, torch.tensor([0, 2, 4, 1, 3])), 1) == [0]
    assert num_kept(40, 0.25) == 10


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.5, 0, 6, True])
def test_keep_outside_range_errors(keep):
    with pytest.raises((ValueError, TypeError), match="keep"):
        keep_classes(torch.tensor([5, 1, 5, 0, 3]), keep)


def test_bad_input_errors(synthetic):
    source, target = synthetic
    empty = TensorDataset(torch.zeros(0, D), torch.zeros(0, dtype=torch.int64))
    net = nearest_centroid_net(MU)
    with pytest.raises(ValueError, match="target_dataset must not be empty"):
        lm_scores(net, empty, K_S)
    with pytest.raises(ValueError, match="target_dataset must not be empty"):
        fm_scores(net, source, empty)
    with pytest.raises(ValueError, match="num_source_classes=5"):
        lm_scores(net, target, 5)
    with pytest.raises(ValueError, match="feature dims mismatch: target features have D=6, source centroids "
                       "have D=4"):
        nearest_centroid(torch.zeros(3, 6), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="not a module of the model"):
        fm_scores(net, source, target, feature_layer="backbone")
    with pytest.raises(ValueError, match="keep as a fraction"):
        DP4TLConfig(keeps=(1.2,))
    assert DP4TLConfig(keeps=(20, 0.5)).keeps == (20, 0.5)  # a class count is checked against K_s at run time
    with pytest.raises(ValueError, match=r"keep as a class count must be in \[1, 40\]"):
        run_dp4tl(DP4TLConfig(keeps=(41,)), progress=False)
    with pytest.raises(ValueError, match="finetune"):
        DP4TLConfig(finetune="partial")


def test_feature_layer_forms_on_smallcnn():
    m = SmallCNN(1, 10).eval()
    ds = TensorDataset(torch.rand(5, 1, 8, 8), torch.zeros(5, dtype=torch.int64))
    auto = extract_features(m, ds)
    assert auto.shape == (5, 64)
    assert torch.allclose(auto, extract_features(m, ds, feature_layer="features"))
    assert torch.allclose(auto, extract_features(m, ds, feature_layer=m.features))


def test_digits_rotation_task():
    t = digits_rotation_task(0)
    assert t.num_source_classes == 40 and t.relevant == list(range(10))
    assert len(t.source_train) == 4 * (1259 - len(t.target_train)) and len(t.target_test) == 359
    x, y = t.source_train.tensors
    n = len(x) // 4
    assert torch.equal(x[n:2 * n], torch.rot90(x[:n], 1, dims=(-2, -1))) and torch.equal(y[n:2 * n], y[:n] + 10)
    # no target training image is (up to rotation) a source image
    src = {tuple(v.flatten().tolist()) for v in x[:n]}
    assert not any(tuple(v.flatten().tolist()) in src for v in t.target_train.tensors[0])
    small = digits_rotation_task(0, target_digits=(3, 8), target_per_class=5)
    assert small.relevant == [3, 8] and len(small.target_train) == 10
    assert sorted(small.target_train.tensors[1].unique().tolist()) == [0, 1]


def _tiny_cfg(**kw) -> DP4TLConfig:
    kw.setdefault("scores", ("lm", "fm", "random"))
    return DP4TLConfig(keeps=(0.25,), pretrain=TrainConfig(epochs=2),
                       surrogate=TrainConfig(epochs=3), probe=TrainConfig(epochs=5, lr=0.01, weight_decay=0.0),
                       full=TrainConfig(epochs=1, lr=0.01, weight_decay=0.0), **kw)


def test_pipeline_end_to_end(tmp_path):
    r = run_dp4tl(_tiny_cfg(), progress=False)
    assert [(row["score"], row["num_classes"]) for row in r.rows] == [("none", 40), ("lm", 10), ("fm", 10),
                                                                      ("random", 10)]
    for row in r.rows:
        assert 0 <= row["target_acc"] <= 100 and row["pretrain_s"] > 0
        assert row["images_seen"] == 2 * row["num_images"]
    assert r.rows[1]["speedup_images"] == pytest.approx(4.0, rel=0.05)
    # even a 3-epoch surrogate maps upright targets to upright classes
    assert r.rows[1]["relevant_kept"] >= 8
    assert "target acc %" in r.table()
    r.to_json(tmp_path / "r.json")
    r.plot(tmp_path / "r.png")
    assert json.loads((tmp_path / "r.json").read_text())["rows"][0]["score"] == "none"
    assert (tmp_path / "r.png").stat().st_size > 0
    full = run_dp4tl(_tiny_cfg(finetune="full", scores=("lm",)), progress=False)
    assert len(full.rows) == 2 and full.meta["finetune"] == "full"


def _parser():
    ap = argparse.ArgumentParser(prog="pyunlearn")
    add_cli(ap.add_subparsers(dest="cmd", required=True))
    return ap


def test_cli_parse():
    a = _parser().parse_args(["dp4tl", "--score", "lm", "--score", "fm", "--keep", "0.5", "--out", "X",
                              "--no-progress"])
    assert a.score == ["lm", "fm"] and a.keep == [0.5] and a.out == "X" and a.no_progress and callable(a.fn)
    d = _parser().parse_args(["dp4tl"])
    assert d.score is None and d.keep is None and d.finetune == "linear" and not d.reverse
    for bad in (["--keep", "0"], ["--keep", "1.5"], ["--keep", "x"], ["--score", "xx"]):
        with pytest.raises(SystemExit) as e:
            _parser().parse_args(["dp4tl", *bad])
        assert e.value.code == 2


def test_cli_bad_epochs(capsys):
    a = _parser().parse_args(["dp4tl", "--epochs", "0", "--no-progress"])
    assert a.fn(a) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_cli_runs_end_to_end(tmp_path, capsys):
    a = _parser().parse_args(["dp4tl", "--score", "lm", "--keep", "0.25", "--epochs", "1", "--out",
                              str(tmp_path / "o"), "--no-progress"])
    assert a.fn(a) == 0
    out = capsys.readouterr().out
    assert "lm" in out and "speed-up" in out
    assert (tmp_path / "o" / "results.json").exists() and (tmp_path / "o" / "results.png").exists()
