"""The benchmark tool's own logic (no timing): regression gate, reports, and a tiny real run."""
import json

import pytest
import torch

from mmkernels.bench import __main__ as bench
from mmkernels.bench.timing import time_fn


def _report(ms, device="cpu-test"):
    rows = [dict(case="attn X", op="cross_attention", dtype="float32", mode="fwd", params={}, impl="mmkernels",
                 median_ms=ms, iqr_ms=0.0, runs=10, gflops=1.0, pct_of_ceiling=10.0, speedup_vs={"sdpa": 1.5},
                 skipped_peers={}),
            dict(case="attn X", op="cross_attention", dtype="float32", mode="fwd", params={}, impl="sdpa",
                 median_ms=ms * 1.5, iqr_ms=0.0, runs=10, gflops=0.7, pct_of_ceiling=7.0)]
    return dict(device=device, torch_version="x", cuda_version=None, commit="abc", cpu_capability="avx512",
                threads=2, date="d", ceiling_gflops={"float32": 10.0}, results=rows)


def test_compare_flags_only_regressions_beyond_the_threshold(tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_report(10.0)))
    assert bench.compare(_report(10.9), str(base), 0.10) == []
    failures = bench.compare(_report(11.5), str(base), 0.10)
    assert len(failures) == 1 and "attn X float32 fwd" in failures[0] and "+15%" in failures[0]


def test_table_markdown_and_plot(tmp_path):
    rep = _report(2.0)
    assert "sdpa 1.50x" in bench.format_table(rep)
    assert "| attn X | float32 | fwd | sdpa | 3.000 |" in bench.format_markdown(rep)
    png = tmp_path / "p.png"
    bench.write_plot(rep, str(png))
    assert png.stat().st_size > 1000


def test_cli_end_to_end_quick_run(tmp_path, monkeypatch):
    # one tiny case through the real runner: what it writes, never how fast it ran
    from mmkernels.bench import cases

    monkeypatch.setattr(cases, "attention_shapes", lambda device, quick: [(1, 9, 13, 2, 8, False)])
    monkeypatch.setattr(cases, "concat_linear_shapes", lambda device, quick: [(5, (3, 4), 6)])
    out = tmp_path / "r.json"
    assert bench.main(["--device", "cpu", "--quick", "--dtypes", "float32", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    ours = [r for r in rep["results"] if r["impl"] == "mmkernels"]
    assert len(ours) == 4 and all(r["median_ms"] > 0 for r in ours)
    assert any("sdpa" in r["speedup_vs"] for r in ours)
    # both yardsticks are in the report, and every rate is given against each
    assert rep["fma_peak_gflops"] > 0 and rep["ceiling_gflops"]["float32"] > 0
    assert all(r["pct_of_fma_peak"] is not None and r["pct_of_ceiling"] is not None for r in rep["results"])
    assert "FMA peak" in bench.format_table(rep) and "% FMA peak" in bench.format_markdown(rep)


def test_cli_gate_exit_codes_on_saved_reports(tmp_path, capsys):
    # The gate through the CLI on synthetic reports (--replot: no timing), so the result is fixed.
    base, same, slower = tmp_path / "base.json", tmp_path / "same.json", tmp_path / "slower.json"
    base.write_text(json.dumps(_report(10.0)))
    same.write_text(json.dumps(_report(10.9)))
    slower.write_text(json.dumps(_report(11.5)))
    assert bench.main(["--replot", str(same), "--compare", str(base), "--max-regression", "0.10"]) == 0
    assert "no regression beyond 10%" in capsys.readouterr().out
    assert bench.main(["--replot", str(slower), "--compare", str(base), "--max-regression", "0.10"]) == 1
    assert "REGRESSION: 1 case(s)" in capsys.readouterr().out
    assert bench.main(["--replot", str(slower), "--compare", str(base), "--max-regression", "0.20"]) == 0


def test_cli_ops_narrows_the_op_suite(tmp_path, monkeypatch):
    from mmkernels.bench import cases

    monkeypatch.setattr(cases, "attention_shapes", lambda device, quick: [(1, 9, 13, 2, 8, False)])
    monkeypatch.setattr(cases, "concat_linear_shapes", lambda device, quick: [(5, (3, 4), 6)])
    out = tmp_path / "r.json"
    assert bench.main(["--device", "cpu", "--quick", "--dtypes", "float32", "--ops", "concat_linear",
                       "--json", str(out)]) == 0
    assert {r["op"] for r in json.loads(out.read_text())["results"]} == {"concat_linear"}
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--quick", "--ops", "attention"])  # not an op name
    with pytest.raises(ValueError, match="unknown op"):
        cases.build_cases("ops", torch.device("cpu"), True, [torch.float32], ops=["attention"])


def test_time_fn_median_iqr_and_stopping_rule_on_a_fake_clock():
    # The n-th call "takes" durations[n % 8] ms of a fake clock. Calls 1-2 are the warm-up; the timed
    # runs (calls 3, 4, ...) take 100, 2, 3, 5, 2, 4, 2, 3, 100 ms: past min_runs=5 timing goes on until
    # the 150 ms budget is spent, which the 9th timed run does (221 ms).
    durations = [4.0, 2.0, 3.0, 100.0, 2.0, 3.0, 5.0, 2.0]
    now, calls = [0.0], []

    def fn(i):
        calls.append(i)
        now[0] += durations[len(calls) % len(durations)] / 1e3

    t = time_fn(fn, torch.device("cpu"), warmup=2, min_runs=5, budget_s=0.15, clock=lambda: now[0])
    assert t.runs == 9 and len(calls) == 11 and calls[2:] == list(range(9))  # rotation index restarts at 0
    assert t.median_ms == pytest.approx(3.0)  # of 2 2 2 3 3 4 5 100 100: the outliers do not move it
    assert t.iqr_ms == pytest.approx(5.0 - 2.0)


def test_time_fn_reports_a_positive_median():
    t = time_fn(lambda i: torch.ones(8).sum(), torch.device("cpu"), warmup=1, min_runs=3, budget_s=0.01)
    assert t.median_ms > 0 and t.runs >= 3


def test_memory_scaling_script_measures_both_implementations(tmp_path):
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "memory_scaling.py"
    out = tmp_path / "mem.json"
    r = subprocess.run([sys.executable, str(script), "--lengths", "96", "--heads", "2", "--head-dim", "16",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {row["impl"] for row in rows} == {"mmkernels", "reference"}
    assert all(isinstance(row["extra_peak_bytes"], int) and row["extra_peak_bytes"] >= 0 for row in rows)
