"""`pyunlearn mesh generate|train|move|eval` end to end on tiny data (parser built here with add_cli)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from pyunlearn.mesh._cli import add_cli


def _run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="pyunlearn")
    add_cli(ap.add_subparsers(dest="command"))
    args = ap.parse_args(argv)
    return args.fn(args)


def test_generate_train_move_eval(tmp_path, capsys):
    d = tmp_path
    assert _run(["mesh", "generate", "--out", str(d / "train"), "--n-samples", "3", "--n", "6",
                 "--workers", "0", "--no-progress"]) == 0
    assert len(list((d / "train").glob("sample_*.npz"))) == 3
    assert _run(["mesh", "generate", "--out", str(d / "test"), "--n-samples", "1", "--n", "9", "--seed", "5",
                 "--workers", "0", "--no-progress"]) == 0
    assert _run(["mesh", "train", "--data", str(d / "train"), "--out", str(d / "run"), "--size", "small",
                 "--epochs", "3", "--lr", "1e-3", "--batch-size", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "trained 3 epochs on 3 samples" in out
    for name in ("model.pt", "checkpoint.pt", "train_log.jsonl", "loss.png"):
        assert (d / "run" / name).is_file(), name
    assert len((d / "run" / "train_log.jsonl").read_text().splitlines()) == 3

    assert _run(["mesh", "move", "--model", str(d / "run" / "model.pt"), "--mesh", "8", "--problem-seed", "3",
                 "--out", str(d / "mv")]) == 0
    out = capsys.readouterr().out
    assert "UM2N: 0 tangled cells" in out and "MA: ER" in out
    with np.load(d / "mv" / "moved.npz") as z:
        pts, moved = z["points"], z["moved"]
        assert pts.shape == moved.shape == (81, 2) and "ma_points" in z.files and "mu_x" in z.files
    side = (pts == 0) | (pts == 1)
    assert np.array_equal(moved[side], pts[side])  # the coordinate normal to a side is exact
    assert (d / "mv" / "movement.png").stat().st_size > 10_000

    assert _run(["mesh", "eval", "--model", str(d / "run" / "model.pt"), "--data", str(d / "test"),
                 "--out", str(d / "ev"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ER UM2N %" in out and "mean ER UM2N" in out
    res = json.loads((d / "ev" / "results.json").read_text())
    assert res["summary"]["samples"] == 1 and res["summary"]["tangled_total"] == 0
    row = res["rows"][0]
    assert row["n_points"] == 100 and row["um2n_ms"] > 0 and row["ma_ms"] > 0
    assert (d / "ev" / "movement.png").is_file()

    # an npz mesh for `move` (points + cells)
    np.savez(d / "mesh.npz", points=pts, cells=np.load(d / "mv" / "moved.npz")["cells"])
    assert _run(["mesh", "move", "--model", str(d / "run" / "checkpoint.pt"), "--mesh", str(d / "mesh.npz"),
                 "--no-ma", "--out", str(d / "mv2")]) == 0


def test_cli_errors(tmp_path, capsys):
    assert _run(["mesh", "train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "--data" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _run(["mesh", "eval", "--model", str(tmp_path / "missing.pt"), "--data",
                 str(tmp_path / "empty")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _run(["mesh", "generate", "--out", str(tmp_path / "g"), "--n-samples", "0"]) == 2
    assert "--n-samples" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(["mesh"])  # a subcommand is required
