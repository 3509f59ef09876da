"""The protocol end to end: results.json schema, resume after an interruption, the CLI and its errors."""

from __future__ import annotations

import json

import pytest

from pyunlearn import cli
from pyunlearn.unlearn import harness
from pyunlearn.unlearn.harness import Experiment

EXP = dict(tasks=("class:3",), methods=("retrain", "ft"), configs={"retrain": {"epochs": 4}, "ft": {"epochs": 1}})
ORIGINAL = {"epochs": 4}


@pytest.fixture(autouse=True)
def _short_original(monkeypatch):
    """The original model's recipe, shortened (the full one is tested in test_models_train.py)."""
    from pyunlearn import train

    real = train.train_original

    def short(splits, model_name="cnn", cfg=None, **kw):
        return real(splits, model_name, train.TrainConfig(**ORIGINAL), **kw)

    monkeypatch.setattr(train, "train_original", short)


def _metrics(results):
    return {t: {m: {k: v for k, v in row.items() if k != "RTE"} for m, row in ms.items()}
            for t, ms in results.items()}


def test_interrupted_run_resumes_to_identical_metrics(digits, tmp_path, monkeypatch):
    full = harness.run(digits, Experiment(**EXP), tmp_path / "a", progress=False, log=lambda *_: None)
    reference = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(reference) == {"class:3"} and set(reference["class:3"]) == {"retrain", "ft"}
    assert set(reference["class:3"]["ft"]) == {"UA", "RA", "TA", "MIA", "RTE", "avg_gap"}
    assert reference["class:3"]["retrain"]["avg_gap"] == 0
    assert (tmp_path / "a" / "results.png").stat().st_size > 0
    assert full is not None

    calls = []
    real = harness.unlearn

    def dies_on_second(*args, **kw):
        calls.append(args[3])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(harness, "unlearn", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        harness.run(digits, Experiment(**EXP), tmp_path / "b", progress=False, log=lambda *_: None)
    partial = json.loads((tmp_path / "b" / "results.json").read_text())
    assert set(partial["class:3"]) == {"retrain"}
    monkeypatch.setattr(harness, "unlearn", real)
    harness.run(digits, Experiment(**EXP), tmp_path / "b", progress=False, log=lambda *_: None)
    resumed = json.loads((tmp_path / "b" / "results.json").read_text())
    assert _metrics(resumed) == _metrics(reference)


def test_seeds_are_averaged_and_kept(digits, tmp_path):
    exp = Experiment(**dict(EXP, tasks=("random:0.1",), seeds=2))
    harness.run(digits, exp, tmp_path, progress=False, log=lambda *_: None)
    runs = json.loads((tmp_path / "runs.json").read_text())["random:0.1"]
    results = json.loads((tmp_path / "results.json").read_text())["random:0.1"]
    for method in ("retrain", "ft"):
        assert set(runs[method]) == {"0", "1"}
        for k in ("UA", "RA", "TA", "MIA"):
            assert results[method][k] == pytest.approx((runs[method]["0"][k] + runs[method]["1"][k]) / 2, abs=1e-4)
    assert runs["ft"]["0"] != runs["ft"]["1"]  # another forget set and another shuffle
    sd = harness.spread(tmp_path)["random:0.1"]["ft"]
    assert set(sd) == {"UA", "RA", "TA", "MIA"} and all(v >= 0 for v in sd.values())
    assert "standard deviation over seeds" in harness.spread_table(tmp_path)


def test_rerun_with_other_settings_is_refused(digits, tmp_path):
    path = tmp_path / "experiment.json"
    harness._check_same_experiment(path, Experiment(**EXP), digits)
    harness._check_same_experiment(path, Experiment(**EXP), digits)  # the same experiment resumes
    other = dict(EXP, configs={"ft": {"epochs": 3}})
    with pytest.raises(ValueError, match=r"different experiment \(configs differ\)"):
        harness._check_same_experiment(path, Experiment(**other), digits)


def test_pruned_original_then_unlearn(digits, tmp_path):
    """Unlearn-Sparse's prune first, then unlearn: the original is OMP-pruned and every method runs on it."""
    import torch

    from pyunlearn.unlearn import prune

    harness.run(digits, Experiment(**dict(EXP, prune="omp:0.5")), tmp_path, progress=False, log=lambda *_: None)
    masks = prune.masks_from_state_dict(torch.load(tmp_path / "original.pt", weights_only=True))
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert abs(kept - 0.5) < 0.01
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["class:3"]) == {"retrain", "ft"}


def test_experiment_errors():
    with pytest.raises(ValueError, match="must include 'retrain'"):
        Experiment(methods=("ft",))
    with pytest.raises(ValueError, match="methods must be among"):
        Experiment(methods=("retrain", "nope"))
    with pytest.raises(TypeError, match="unknown option"):
        Experiment(configs={"ft": {"lr0": 1}})
    with pytest.raises(ValueError, match="prune must be one of"):
        Experiment(prune="magnitude")
    with pytest.raises(ValueError, match="prune rate must be a number in"):
        Experiment(prune="omp:1.5")
    with pytest.raises(ValueError, match="seeds must be an int >= 1"):
        Experiment(seeds=0)


def test_cli_unlearn_builds_the_experiment(tmp_path, capsys, monkeypatch):
    """The CLI's parsing; harness.run itself is tested above and end to end by the (slow) demo test."""
    from pyunlearn.eval import Results

    seen = {}

    def fake_run(splits, exp, out_dir, progress=True):
        seen.update(exp=exp, out=out_dir, progress=progress, data=splits.name)
        results = Results()
        results.add("class:3", "retrain", {"UA": 100.0, "RA": 100.0, "TA": 99.0, "MIA": 100.0}, 1.0)
        return results

    monkeypatch.setattr(harness, "run", fake_run)
    assert cli.main(["unlearn", "--method", "ga", "--forget", "class:3", "--forget", "random:0.1", "--set",
                     "epochs=1", "--set", "lr=0.002", "--out", str(tmp_path), "--no-progress"]) == 0
    exp = seen["exp"]
    assert exp.tasks == ("class:3", "random:0.1") and exp.methods == ("retrain", "ga")
    assert exp.configs == {"ga": {"epochs": 1, "lr": 0.002}}
    assert seen["progress"] is False and seen["data"] == "digits" and exp.seeds == 1
    assert "retrain" in capsys.readouterr().out


def test_cli_unlearn_errors(tmp_path, capsys):
    assert cli.main(["unlearn", "--method", "nope", "--forget", "class:3", "--out", str(tmp_path)]) == 2
    assert "methods must be among" in capsys.readouterr().err
    assert cli.main(["unlearn", "--method", "ft", "--forget", "class:3", "--set", "lr=abc",
                     "--out", str(tmp_path)]) == 2
    assert "--set lr: expected a float, got 'abc'" in capsys.readouterr().err
    assert cli.main(["unlearn", "--method", "ft", "--forget", "class:3", "--set", "nope=1",
                     "--out", str(tmp_path)]) == 2
    assert "has no option 'nope'" in capsys.readouterr().err
