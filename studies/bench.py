"""The side-by-side benchmark: every method x sparsity on the embedded model, with seeds, time, memory.

Each run is one `d2p prune` process (so peak memory is that run's own), kept in the studies' run cache
(studies/runs.py) under the hash of its RunSpec: an interrupted benchmark continues where it stopped.
`python -m studies.bench --report` rebuilds the table from the cache only.
"""
from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from d2p_helpers.paper import opt125m_ppl
from d2p_helpers.record import read_json, write_json, write_text
from studies.runs import ROOT, RunSpec, cached, refuse_a_shrinking_report, run_plan

PROTOCOL = {"model": "smollm2-135m", "calib": "news", "nsamples": 16, "seqlen": 256,
            "eval": ["wiki", "news:val"], "eval_windows": 16, "dtype": "float32", "device": "cpu"}
METHODS = ["magnitude", "wanda", "sparsegpt", "d2-sparsegpt", "d2-wanda", "d2prune"]
SETTINGS = ["0.5", "0.6", "0.7", "0.8", "2:4", "4:8"]
SEEDED = {"0.5": [0, 1, 2], "0.7": [0, 1, 2]}
METHOD_SPECS: dict = {}            # label -> (method, options) where a label is not a plain method name
RUN_ORDER = SETTINGS               # settings in the order their seed-0 runs are made
NAME, TITLE = "bench", "Benchmark (quick protocol, 16 × 256): every method on the embedded model"

# The paper's calibration count (issue: paper-N protocol). N = 128 windows as in the paper; L = 512, the
# shortest the issue allows: one run is then ~16x the quick protocol's tokens (about 20 min on one thread
# here), and L = 2048 would quadruple that again.
PAPER_N = {
    "PROTOCOL": {"model": "smollm2-135m", "calib": "news", "nsamples": 128, "seqlen": 512,
                 "eval": ["wiki", "news:val"], "eval_windows": 32, "dtype": "float32", "device": "cpu"},
    "METHODS": ["wanda", "sparsegpt", "d2prune", "d2prune-noqkv", "recipe"],
    "METHOD_SPECS": {"d2prune-noqkv": ("d2prune", {"frozen": "all"})},
    "SETTINGS": ["0.5", "0.6", "0.7", "0.8", "2:4"],
    "RUN_ORDER": ["0.7", "2:4", "0.5", "0.6", "0.8"],
    "SEEDED": {"0.5": [0, 1, 2], "0.7": [0, 1, 2], "2:4": [0, 1, 2]},
    "NAME": "bench_paper_n",
    "TITLE": "Benchmark (paper-N protocol, 128 × 512): the paper's calibration count on the embedded model",
}


def use_protocol(name: str) -> None:
    """Switch this module to the paper-N protocol (the quick one is the default)."""
    if name == "paper-n":
        globals().update(PAPER_N)
    elif name != "quick":
        raise SystemExit(f"bench: unknown protocol '{name}': expected quick or paper-n")


def spec(label: str, setting: str, seed: int) -> RunSpec:
    if label == "recipe":   # the recipe study's preset (results/recipes.md), with its rule for N:M (no OWL)
        from studies.recipes import PRESET, configs
        method, options = configs(setting)[PRESET]
    else:
        method, options = METHOD_SPECS.get(label, (label, {}))
    return RunSpec.make(method, "0" if method == "dense" else setting, options, seed=seed, **PROTOCOL)


def plan() -> list[tuple[str, str, int]]:
    """Seed 0 of every seeded setting first, then their extra seeds (the cells a verdict needs), then seed 0
    of the other settings: an interrupted sweep has its verdicts before its extra columns."""
    seeded = [s for s in RUN_ORDER if s in SEEDED]
    runs = [("dense", "0", 0)]
    runs += [(m, s, 0) for s in seeded for m in METHODS]
    runs += [(m, s, seed) for s in seeded for seed in SEEDED[s][1:] for m in METHODS if m != "magnitude"]
    runs += [(m, s, 0) for s in RUN_ORDER if s not in SEEDED for m in METHODS]
    return runs


def run_all(limit_minutes: float | None, ray_address: str | None = None, device: str = "cpu") -> None:
    todo = plan()
    if device != "cpu":
        PROTOCOL["device"] = device
    if ray_address:
        from studies.ray_sweep import run_on_ray
        run_on_ray([spec(*r) for r in todo], ray_address, gpus_per_task=1 if device.startswith("cuda") else 0,
                   in_process=False)
        return
    run_plan(todo, spec, limit_minutes, "bench")


def import_records(path) -> int:
    """Seed the run cache from a results file's records (each results file keeps every run it reports, with
    its plan coordinates under "bench"), so a fresh clone resumes and reports without rerunning."""
    from studies.runs import seed_cache_from
    return seed_cache_from(path, "bench", lambda method, setting, seed, **_protocol: spec(method, setting, seed),
                           "bench")


def load_records() -> list[dict]:
    """The planned runs present in the cache, each with its plan coordinates under "bench"."""
    out = []
    for method, setting, seed in plan():
        rec = cached(spec(method, setting, seed))
        if rec is not None:
            out.append({**rec, "bench": {**PROTOCOL, "method": method, "setting": setting, "seed": seed}})
    return out


def aggregate(records: list[dict]) -> dict:
    """{(method, setting): {ppl mean/std per text, n seeds, prune seconds, peak MB}}."""
    groups: dict = {}
    for r in records:
        b = r["bench"]
        groups.setdefault((b["method"], b["setting"]), []).append(r)
    table = {}
    for (method, setting), rs in groups.items():
        row = {"seeds": sorted(r["bench"]["seed"] for r in rs)}
        for text in PROTOCOL["eval"]:
            vals = [r["ppl"][text] for r in rs]
            row[text] = {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
        row["prune_seconds"] = statistics.mean(r.get("prune_seconds", 0.0) for r in rs)
        ratios = [r["floor_ratio"] for r in rs if r.get("floor_ratio") is not None]
        row["floor_ratio"] = statistics.mean(ratios) if ratios else None
        row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rs)
        table[f"{method}@{setting}"] = row
    return table


def seeds_run(table: dict) -> str:
    by_setting = {}
    for key, row in table.items():
        method, setting = key.split("@")
        if method not in ("dense", "magnitude"):
            by_setting.setdefault(setting, set()).update(row["seeds"])
    return "; ".join(f"{s}: seeds {', '.join(map(str, sorted(v)))}" for s, v in by_setting.items())


def planned_seeds() -> str:
    """'seeds 0, 1, 2 at 0.5 and 0.7, seed 0 elsewhere' from the plan itself."""
    groups: dict = {}
    for setting, seeds in SEEDED.items():
        groups.setdefault(tuple(seeds), []).append(setting)
    return "; ".join(f"seeds {', '.join(map(str, s))} at {' and '.join(v)}" for s, v in groups.items()) + \
        ", seed 0 elsewhere"


def fmt(cell: dict) -> str:
    return f"{cell['mean']:.2f} ± {cell['std']:.2f}" if cell["std"] else f"{cell['mean']:.2f}"


def markdown(table: dict, records: list[dict]) -> str:
    dense = table.get("dense@0")
    versions = records[0]["versions"] if records else {}
    lines = [f"# {TITLE}",
             "",
             f"Protocol: model `{PROTOCOL['model']}` (SmolLM2-135M-Instruct, Q4_1 weights dequantised to fp32), "
             f"calibration `{PROTOCOL['calib']}` {PROTOCOL['nsamples']} × {PROTOCOL['seqlen']} tokens, "
             f"perplexity on `wiki` test and `news:val` ({PROTOCOL['eval_windows']} windows × {PROTOCOL['seqlen']} tokens "
             f"each), {PROTOCOL['device']} {PROTOCOL['dtype']}"
             + (", one thread per run" if PROTOCOL["device"] == "cpu" else "") + ". Planned: "
             f"{planned_seeds()}; "
             f"seeds run: {seeds_run(table)} ({len(records)} of {len(plan())} planned runs; mean ± std over "
             f"calibration seeds where there are several); "
             f"magnitude uses no data. D²Prune: r1 = 1, r2 = 0, s = 1500, frozen v (Llama default); d2prune-noqkv: "
             f"none of q/k/v updated (frozen all)" + ("; recipe: the recipe study's preset (D²Prune with none of q/k/v "
             "updated, then OWL, DSnoT and least-squares reconstruction by 20 CG steps; no OWL at N:M)"
             if "recipe" in METHODS else "")
             + ". "
             f"torch {versions.get('torch')}, transformers {versions.get('transformers')}. "
             f"Generated by `studies/bench.py{' --protocol paper-n' if NAME != 'bench' else ''}` from the run cache. Time: the runs took "
             f"{sum(r['seconds'] for r in records) / 60:.0f} min in all (sum of per-run seconds"
             + (f", one thread each, on a machine with {os.cpu_count()} cores shared with other jobs)."
                if PROTOCOL["device"] == "cpu" else f", on {PROTOCOL['device']})."),
             ""]
    if dense:
        lines.append(f"Dense: wiki {dense['wiki']['mean']:.2f}, news:val {dense['news:val']['mean']:.2f}.")
        lines.append("")
    lines += ["## Perplexity, `wiki` test (lower is better)", "",
              "| method | " + " | ".join(SETTINGS) + " |", "|---|" + "---|" * len(SETTINGS)]
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(fmt(table[f'{m}@{s}']['wiki']) if f"{m}@{s}" in table else "–"
                                            for s in SETTINGS) + " |")
    lines += ["", "## Perplexity, `news:val` (in-domain check)", "",
              "| method | " + " | ".join(SETTINGS) + " |", "|---|" + "---|" * len(SETTINGS)]
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(fmt(table[f'{m}@{s}']['news:val']) if f"{m}@{s}" in table else "–"
                                            for s in SETTINGS) + " |")
    lines += ["", "## D²Prune relative to SparseGPT and Wanda (wiki, mean ppl; negative = better), ours vs the paper's OPT-125M", "",
              "| setting | ours vs SparseGPT | ours vs Wanda | paper OPT-125M vs SparseGPT | paper vs Wanda |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        def rel(a, b):
            return f"{100 * (a / b - 1):+.1f}%"
        ours = table.get(f"d2prune@{s}")
        cells = []
        for base in ("sparsegpt", "wanda"):
            b = table.get(f"{base}@{s}")
            cells.append(rel(ours["wiki"]["mean"], b["wiki"]["mean"]) if ours and b else "–")
        paper = opt125m_ppl(s)
        pcells = [rel(paper["D2Prune"], paper[b]) if paper else "–" for b in ("SparseGPT", "Wanda")]
        lines.append(f"| {s} | " + " | ".join(cells + pcells) + " |")
    lines += verdict_lines(records)
    lines += ["", "## Cost", "", "| method | mean prune seconds (50%) | prune ÷ two forward passes | peak RSS MB |",
              "|---|---|---|---|"]
    for m in METHODS:
        r = table.get(f"{m}@0.5")
        if r:
            ratio = f"{r['floor_ratio']:.2f}" if r["floor_ratio"] is not None else "– (no data pass)"
            lines.append(f"| {m} | {r['prune_seconds']:.1f} | {ratio} | {r['peak_rss_mb']:.0f} |")
    seed0 = {(r["bench"]["method"], r["bench"]["setting"]): r["prune_seconds"] for r in records
             if r["bench"]["seed"] == 0 and r.get("prune_seconds")}
    ratios = sorted(seed0[("d2prune", s)] / seed0[("sparsegpt", s)] for s in SETTINGS
                    if ("d2prune", s) in seed0 and ("sparsegpt", s) in seed0)
    if ratios:
        lines += ["", f"D²Prune / SparseGPT prune time, seed 0, per setting: median {statistics.median(ratios):.2f}× "
                      f"(range {ratios[0]:.2f}–{ratios[-1]:.2f}; paper Table 15: 0.96× on an A40). Runs share the "
                      "machine with other work, so single timings are noisy."]
    lines += ["", "Paper numbers (OPT-125M, C4 128 × 2048 calibration, WikiText-2 test) are a different model and text; "
                  "they are shown only for the relative gains."]
    return "\n".join(lines) + "\n"


def per_seed(records: list[dict]) -> dict:
    """{(method, setting): {text: {seed: ppl}}} from the planned runs present."""
    out: dict = {}
    for r in records:
        b = r["bench"]
        for text in PROTOCOL["eval"]:
            out.setdefault((b["method"], b["setting"]), {}).setdefault(text, {})[b["seed"]] = r["ppl"][text]
    return out


def verdict_lines(records: list[dict]) -> list[str]:
    """Challenger ÷ reference on the same calibration draws, per setting and text, with the paired noise rule
    (d2p_helpers.noise: the per-seed ratio differs from 1 by more than t95 standard errors)."""
    from d2p_helpers.noise import VERDICT_WORD, paired_ratio
    seeds = per_seed(records)
    pairs = [(a, b) for a, b in (("d2prune", "sparsegpt"), ("d2prune", "wanda"), ("d2prune-noqkv", "sparsegpt"),
                                 ("recipe", "sparsegpt"), ("recipe", "d2prune")) if a in METHODS and b in METHODS]
    lines = ["", "## Verdicts (paired per calibration seed)", "",
             "Challenger ÷ reference on the same calibration windows, mean ± std of the per-seed ratio; "
             "**ahead** / **behind** when it differs from 1 by more than the 95% t critical value times its "
             "standard error, else a tie; one seed gives no verdict.", "",
             "| setting | text | challenger ÷ reference | ratio | seeds | verdict |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        for text in PROTOCOL["eval"]:
            for a, b in pairs:
                pr = paired_ratio(seeds.get((a, s), {}).get(text, {}), seeds.get((b, s), {}).get(text, {}))
                if pr is None:
                    continue
                ratio = f"{pr['mean']:.3f}" + (f" ± {pr['std']:.3f}" if pr["std"] is not None else "")
                lines.append(f"| {s} | `{text}` | {a} ÷ {b} | {ratio} | {pr['n']} | {VERDICT_WORD[pr['verdict']]} |")
    return lines


def seeds_caption(table: dict) -> str:
    """'seeds per point: 3 at 0.5, 0.7; 1 at 0.6, 0.8, 2:4' from the runs present (never the plan)."""
    by_n: dict = {}
    for s in SETTINGS:
        ns = {len(table[f"{m}@{s}"]["seeds"]) for m in METHODS if f"{m}@{s}" in table and m != "magnitude"}
        if ns:
            by_n.setdefault("–".join(map(str, sorted(ns))), []).append(s)
    return "seeds per point: " + "; ".join(f"{n} at {', '.join(v)}" for n, v in by_n.items())


def figure(table: dict) -> Path:
    """Left: perplexity of every method (log). Right: each data-driven method relative to SparseGPT, with the
    paper's OPT-125M D²Prune / SparseGPT ratio beside ours (another model: only the direction compares)."""
    import matplotlib.pyplot as plt
    from d2p_helpers import plots
    plots.style()
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(13, 4.2))
    xs = SETTINGS
    for m in METHODS:
        ys = [table[f"{m}@{s}"]["wiki"]["mean"] if f"{m}@{s}" in table else float("nan") for s in xs]
        es = [table[f"{m}@{s}"]["wiki"]["std"] if f"{m}@{s}" in table else 0 for s in xs]
        plots.settings_errorbar(ax, xs, ys, es, marker="o", label=m, color=plots.method_color(m))
        if m in ("magnitude", "sparsegpt"):
            continue
        base = [table.get(f"sparsegpt@{s}", {}).get("wiki", {}).get("mean", float("nan")) for s in xs]
        plots.settings_errorbar(rel, xs, [y / b for y, b in zip(ys, base)], [e / b for e, b in zip(es, base)],
                                marker="o", label=m, color=plots.method_color(m))
    paper = [opt125m_ppl(s) for s in xs]
    at = plots.setting_positions(xs)
    rel.plot([at[s] for s in xs], [p["D2Prune"] / p["SparseGPT"] if p else float("nan") for p in paper], "k*", ms=10,
             label="paper OPT-125M: D²Prune / SparseGPT")
    if "dense@0" in table:
        ax.axhline(table["dense@0"]["wiki"]["mean"], color="#444444", ls="--", lw=1, label="dense")
    ax.set_yscale("log"), ax.set_xlabel("sparsity / pattern"), ax.set_ylabel("wiki test perplexity (log)")
    ax.set_title("Pruning SmolLM2-135M: perplexity by method"), ax.legend(fontsize=8, ncol=2)
    rel.axhline(1, color=plots.METHOD_COLORS["sparsegpt"], lw=1.5, label="sparsegpt")
    rel.set_yscale("log"), rel.set_xlabel("sparsity / pattern"), rel.set_ylabel("perplexity ÷ SparseGPT's (log)")
    rel.set_title("Relative to SparseGPT (below 1 = better)"), rel.legend(fontsize=8)
    return plots.save(fig, ROOT / "figures" / f"{NAME}_ppl.png",
                      caption=f"calib news {PROTOCOL['nsamples']}x{PROTOCOL['seqlen']}, eval wiki test "
                              f"{PROTOCOL['eval_windows']}x{PROTOCOL['seqlen']}; error bars: std over the "
                              f"calibration seeds present ({seeds_caption(table)})")


def report() -> None:
    records = load_records()
    if not records:
        raise SystemExit("[bench] no runs cached yet; run `make bench`")
    saved = ROOT / "results" / f"{NAME}.json"
    refuse_a_shrinking_report(saved, len(records), len(read_json(saved)["records"]) if saved.exists() else 0)
    table = aggregate(records)
    write_json(saved, {"protocol": PROTOCOL, "table": table, "records": records})
    write_text(ROOT / "results" / f"{NAME}.md", markdown(table, records))
    figure(table)
    print(f"[bench] wrote results/{NAME}.json, results/{NAME}.md, figures/{NAME}_ppl.png ({len(records)} runs)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--protocol", default="quick", help="quick (16 × 256) or paper-n (128 × 512)")
    ap.add_argument("--report", action="store_true", help="only rebuild the table from cached runs")
    ap.add_argument("--import-records", metavar="JSON", help="seed the run cache from a results file's records")
    ap.add_argument("--ray", metavar="ADDRESS", default=os.environ.get("RAY_ADDRESS"),
                    help="run each (method, setting, seed) as a Ray task on this cluster (default: $RAY_ADDRESS)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (with --ray: one GPU per task)")
    ap.add_argument("--limit-minutes", type=float, default=None, help="stop starting new runs after this long")
    a = ap.parse_args()
    use_protocol(a.protocol)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for src in [ROOT / "results" / f"{NAME}.json", *([a.import_records] if a.import_records else [])]:
        if (n := import_records(src)):
            print(f"[bench] {n} runs added to the cache from {src}")
    if not a.report:
        run_all(a.limit_minutes, a.ray, a.device)
    report()
