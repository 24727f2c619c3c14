"""Result files that describe the same run give it one value (issue: two numbers for one configuration)."""
import json
from pathlib import Path

import pytest

from studies.runs import ResultsDisagree, same_run

RESULTS = Path(__file__).resolve().parent.parent / "results"


def test_same_run_returns_the_value_and_names_every_source_when_they_differ():
    assert same_run({"a.json": 85.2, "b.json": 85.2}, "x") == 85.2
    with pytest.raises(ResultsDisagree, match=r"a.json says 86.36.*b.json says 85.239"):
        same_run({"a.json": 86.36, "b.json": 85.239}, "D²Prune at 0.5")


def _bench_d2prune() -> dict:
    bench = json.loads((RESULTS / "bench.json").read_text())
    return bench["protocol"], {(r["bench"]["setting"], r["bench"]["seed"]): r["ppl"]
                               for r in bench["records"] if r["bench"]["method"] == "d2prune"}


def _same_protocol(a: dict, b: dict) -> bool:
    keys = ("model", "calib", "nsamples", "seqlen", "eval_windows")
    return all(a[k] == b[k] for k in keys)


def test_the_committed_studies_agree_with_the_benchmark_on_the_runs_they_share():
    """The q/k/v study's "freeze v" and the hyper-parameter study's default cells are the benchmark's D²Prune
    runs (same model, calibration windows, seed and evaluation windows): every shared run has one value."""
    protocol, d2 = _bench_d2prune()
    qkv = json.loads((RESULTS / "qkv_selectors.json").read_text())
    hp = json.loads((RESULTS / "hparams.json").read_text())
    checked = 0
    if _same_protocol(qkv["protocol"], protocol):
        text, seed = qkv["protocol"]["eval"][0], qkv["protocol"]["seed"]
        for row in qkv["rows"]:
            key = (f"{row['sparsity']:g}", seed)
            if row["config"] == "freeze v" and key in d2:
                same_run({"bench.json": d2[key][text], "qkv_selectors.json": row["ppl"]}, f"D²Prune {key} {text}")
                checked += 1
    if _same_protocol(hp["protocol"], protocol):
        text = hp["protocol"]["eval"][0]
        defaults = [r for r in hp["studies"]["lambda"] if (r["r1"], r["r2"]) == (1.0, 0.0)]
        defaults += [r for r in hp["studies"]["s"] if r["s"] == 1500]
        for row in defaults:
            for seed, value in zip(row["seeds"], row["ppl"]):
                key = (f"{row['sparsity']:g}", seed)
                if key in d2:
                    same_run({"bench.json": d2[key][text], "hparams.json": value}, f"D²Prune {key} {text}")
                    checked += 1
    assert checked >= 6, f"only {checked} shared runs found: the studies' protocols drifted apart"


def test_each_dense_baseline_is_the_dense_number_every_other_file_reports_for_its_cut():
    """results/dense_baselines.json is the one dense value per protocol: the benchmarks' dense runs and the LoRA
    study's dense perplexity are the same measurement, and every study's own protocol has a row."""
    from studies import bench, error_correction, recipes
    from studies.dense_baselines import row_for_cut
    rows = json.loads((RESULTS / "dense_baselines.json").read_text())["rows"]
    checked = 0
    for name in ("bench.json", "bench_paper_n.json"):
        saved = json.loads((RESULTS / name).read_text())
        p, dense = saved["protocol"], saved["table"]["dense@0"]
        row = row_for_cut(p["eval"], p["eval_windows"], p["seqlen"], rows)
        for text in p["eval"]:
            same_run({name: dense[text]["mean"], "dense_baselines.json": row["ppl"][text]}, f"dense {name} {text}")
            checked += 1
    lora = json.loads((RESULTS / "lora.json").read_text())
    row = row_for_cut([lora["protocol"]["eval_data"]], lora["protocol"]["eval_windows"], lora["protocol"]["seqlen"], rows)
    same_run({"lora.json": lora["dense"]["ppl"], "dense_baselines.json": row["ppl"]["wiki"]}, "dense lora wiki")
    for p in (bench.PROTOCOL, bench.PAPER_N["PROTOCOL"], recipes.PROTOCOL, error_correction.PROTOCOL):
        assert row_for_cut(p["eval"], p["eval_windows"], p["seqlen"], rows) is not None, p
    assert checked + 1 == 5
