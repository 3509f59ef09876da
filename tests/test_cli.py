"""The command line: info, bench, demo, and its errors (unlearn: tests/unlearn/test_harness.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyunlearn import cli


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu"] is True and info["backend"] == "cpp"
    assert set(info["ops"]) == {"masked_sgd_step", "masked_adamw_step", "masked_sophia_step", "gat_fwd", "gat_bwd",
                                "gatv2_fwd", "gatv2_bwd", "zo_accumulate", "zo_accumulate_rows",
                                "zo_philox_bits"}
    assert "cpp" in info["available_backends"]


def test_info_text_as_installed_script(tmp_path):
    # cwd outside the checkout: `-m` would otherwise import the source folder, which has no compiled _C
    out = subprocess.run([sys.executable, "-m", "pyunlearn.cli", "info"], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    assert "CPU kernels      : yes" in out and "active backend   : cpp" in out


def test_bench_tiny_writes_checked_rows(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert cli.main(["bench", "masked_optim", "--size", "tiny", "--no-compile", "--reps", "3", "--quiet",
                     "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    providers = {r["provider"] for r in rows}
    assert {"pyunlearn cpp", "torch foreach AdamW + exact mask", "index gather/scatter (eager)"} <= providers
    assert all(r["ms"] > 0 and r["speedup"] > 0 for r in rows)
    assert "pyunlearn cpp" in capsys.readouterr().out


def test_bench_unknown_family(capsys):
    assert cli.main(["bench", "nope"]) == 2
    assert "family must be one of masked_optim, gat, gatv2, zo, got 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    """The main job (Retrain, FT, SalUn on both tasks), then a rerun that resumes from results.json."""
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert all(len(per_seed) == 3 for task in json.loads((out / "runs.json").read_text()).values()
               for per_seed in task.values())
    assert set(results) == {"class:3", "random:0.1"}
    for task in results.values():
        assert set(task) == {"retrain", "ft", "salun"}
        assert all(set(row) == {"UA", "RA", "TA", "MIA", "RTE", "avg_gap"} for row in task.values())
    assert results["class:3"]["retrain"]["UA"] > 95 and results["class:3"]["retrain"]["MIA"] > 90
    assert (out / "results.png").stat().st_size > 0
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text()) == results


def test_every_op_is_listed_and_has_a_cpu_kernel():
    """build_info()["ops"] (C++), the backend table (Python) and the dispatcher agree: a new op cannot be missed."""
    import torch

    import pyunlearn

    assert set(pyunlearn._C.build_info()["ops"]) == set(pyunlearn._backends.OPS)
    for op in pyunlearn._backends.OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pyunlearn::{op}", "CPU"), op


def test_bench_gat_tiny(tmp_path):
    pytest.importorskip("torch_geometric")
    out = tmp_path / "gat.json"
    assert cli.main(["bench", "gat", "--size", "tiny", "--no-compile", "--reps", "2", "--quiet",
                     "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {"PyG GATConv (eager)", "pyunlearn cpp", "pyunlearn reference"} <= {r["provider"] for r in rows}
    assert {r["case"].split()[-1] for r in rows} == {"forward", "forward+backward"}


def test_bench_gatv2_tiny(tmp_path):
    pytest.importorskip("torch_geometric")
    out = tmp_path / "gatv2.json"
    assert cli.main(["bench", "gatv2", "--size", "tiny", "--no-compile", "--reps", "2", "--quiet",
                     "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {"PyG GATv2Conv (eager)", "pyunlearn cpp", "pyunlearn reference"} <= {r["provider"] for r in rows}
