"""Keep the tables generated: copy results/*.md between markers, never type numbers by hand.

README.md holds one headline table (results/headline.md, made here from results/recipes.json); docs/RESULTS.md
holds every other study's table."""
from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = {"headline": "results/headline.md", "bench": "results/bench.md", "qkv": "results/qkv_selectors.md",
          "hparams": "results/hparams.md", "zeroshot": "results/zeroshot.md", "vision": "results/vision.md",
          "timing": "results/timing.md", "lora": "results/lora.md", "bench_paper_n": "results/bench_paper_n.md",
          "recipes": "results/recipes.md", "reconstruct": "results/reconstruct.md",
          "error_correction": "results/error_correction.md", "gpu": "results/gpu.md",
          "notebooks": "notebooks/PLAN.md", "dense_baselines": "results/dense_baselines.md"}
PAGES = {"README.md": ["headline", "notebooks"],
         "docs/RESULTS.md": [b for b in BLOCKS if b not in ("headline", "notebooks")]}

# (notebook, what you learn, the result files it reads by default: use_results=True)
NOTEBOOKS = [
    ("00_setup_and_data", "the embedded model and texts, the model's anatomy, dense perplexity by the paper's "
     "protocol", []),
    ("01_dual_taylor_derivation", "the dual Taylor expansion, checked term by term on a real layer; how big the "
     "D² term is next to OBS", []),
    ("02_delta_x_lambda_check", "the paper's δx = λx fit (Appendix C) on real text pairs, with a same-text "
     "control", []),
    ("03_prune_opt125m_step_by_step", "a 4 × 8 example by hand, then capture → statistics → scores → masks → OBS "
     "update → error on one real block, then the whole model", []),
    ("04_attention_kl", "attention maps and what pruning changes in them, per-layer KL and RMSE for every q/k/v "
     "choice", ["qkv_selectors.json"]),
    ("05_qkv_update_search", "three selectors for the frozen projection that never look at the test text",
     ["qkv_selectors.json"]),
    ("06_method_comparison", "the benchmark table and plot, the 2×2 of D² score × frozen projection, and whether "
     "the paper's gains carry over", ["bench.json", "hparams.json", "qkv_selectors.json", "bench_paper_n.json"]),
    ("07_zero_shot", "zero-shot accuracy (lm-eval's scoring) of dense and pruned models", ["zeroshot.json"]),
    ("08_scale_to_llama", "memory arithmetic for 7B–70B, the same pipeline on a Llama (the embedded GQA model)",
     []),
    ("09_deit_vision", "pruning a real ViT-S/14 on real images; k-NN top-1, CLS cosine, attention on a photo", []),
    ("10_sparse_speedup", "2:4 layout checks and, on a CUDA GPU, dense vs 2:4 GEMM timings", []),
    ("11_hyperparameters", "λ₁ × λ₂, the scale s, the calibration count N — and a D² term that means the same at "
     "any N", ["hparams.json"]),
    ("12_lora_recovery", "LoRA fine-tuning of pruned models with the sparsity kept, before/after", ["lora.json"]),
    ("13_beyond_the_paper", "OWL, DSnoT, least-squares reconstruction, error correction toward the dense model "
     "and the recipe preset, one stage at a time", ["recipes.json"]),
    ("14_paper_claims", "each claim of the paper with our number and a computed verdict, and the verdict sheet",
     ["bench.json", "bench_paper_n.json", "qkv_selectors.json", "hparams.json", "zeroshot.json", "vision.json",
      "timing.json"]),
]
# the two-hour meeting: (minutes into the meeting, notebooks, what the group does)
MEETING = [(0, ["00_setup_and_data"], "start it, read the paper's abstract and VERDICTS.md while it runs"),
           (15, ["01_dual_taylor_derivation", "02_delta_x_lambda_check"], "the theory, live"),
           (45, ["03_prune_opt125m_step_by_step"], "the 4 × 8 example on the whiteboard, then one real block, live"),
           (75, ["04_attention_kl", "05_qkv_update_search", "06_method_comparison"],
            "the attention argument and the benchmark, from stored results"),
           (100, ["13_beyond_the_paper", "14_paper_claims"], "beyond the paper and the verdicts, stored results")]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def stored_cost(name: str) -> str:
    """What one result file holds, and the compute it records (the time to regenerate it, one core)."""
    path = ROOT / "results" / name
    if not path.exists():
        return f"`{name}` (not measured yet)"
    d = json.loads(path.read_text())
    if "records" in d:
        runs, secs = len(d["records"]), sum(r.get("seconds", 0) for r in d["records"])
    elif name == "qkv_selectors.json" or name == "lora.json":
        runs, secs = len(d["rows"]), sum(r.get("prune_seconds", 0) + r.get("train_seconds", 0) for r in d["rows"])
    elif name == "zeroshot.json":
        runs, secs = len(d["models"]), sum(m["seconds"] for m in d["models"].values())
    elif name == "vision.json":
        runs, secs = len(d["rows"]), d["total_run_seconds"]
    elif name == "timing.json":
        runs, secs = sum(len(v) for v in d["runs"].values()), sum(r["prune_seconds"] for v in d["runs"].values()
                                                                   for r in v)
    elif name == "hparams.json":
        runs, secs = sum(len(r["ppl"]) for rows in d["studies"].values() for r in rows), 0
    else:
        runs, secs = d.get("runs_present", 0), 0
    return f"`{name}` ({runs} runs" + (f", {_hours(secs)} recorded)" if secs else ")")


def notebook_plan() -> str:
    """The notebook table (runtime at the defaults from notebooks/runtimes.json, what each reads) and a plan for
    a two-hour reading-group meeting built from those runtimes."""
    sys.path.insert(0, str(ROOT))
    from d2p_helpers.notebooks_run import runtimes
    times = runtimes()

    def rt(n):
        return (f"{times[n]['seconds'] / 60:.1f} min" if times[n]["seconds"] >= 90 else
                f"{times[n]['seconds']:.0f} s") if n in times else "not measured"
    lines = ["**A two-hour meeting.** Runtimes are the notebooks' own at their defaults on a 2-core CPU "
             "(`notebooks/runtimes.json`); a notebook that reads stored results opens them instantly, and "
             "regenerating those (`use_results=False`) costs what the last column says.", ""]
    for start, names, what in MEETING:
        total = sum(times.get(n, {}).get("seconds", 0) for n in names)
        unmeasured = [n[:2] for n in names if n not in times]
        lines.append(f"* **{start // 60}:{start % 60:02d}** — {', '.join(f'`{n[:2]}`' for n in names)}: {what} "
                     f"(run time {_hours(total) if total >= 60 else f'{total:.0f} s'}"
                     + (f"; {', '.join(unmeasured)} not measured yet" if unmeasured else "") + ").")
    rest = [n for n, _, _ in NOTEBOOKS if not any(n in names for _, names, _ in MEETING)]
    lines += [f"* **Homework** — {', '.join(f'`{n[:2]}`' for n in rest)}: "
              f"{_hours(sum(times.get(n, {}).get('seconds', 0) for n in rest))} of run time in all.", "",
              "| notebook | what you learn | at its defaults | reads by default (regenerating costs) |",
              "|---|---|---|---|"]
    for n, what, reads in NOTEBOOKS:
        lines.append(f"| `{n}` | {what} | {rt(n)} | {', '.join(stored_cost(f) for f in reads) or 'runs live'} |")
    return "\n".join(lines) + "\n"

DOMAIN = {"wiki": "other domain", "news:test": "in domain"}


def headline() -> str:
    """README's headline: the recipe preset's table, then the error-correction study's choice."""
    return recipe_headline() + error_correction_headline()


def recipe_headline() -> str:
    """Per setting and reported text: the best peer, D²Prune and the recipe preset (mean ± std over calibration
    seeds) with the paired verdict, from results/recipes.json."""
    from d2p_helpers.noise import paired_ratio
    from d2p_helpers.noise import VERDICT_WORD
    rec = json.loads((ROOT / "results" / "recipes.json").read_text())
    tab, p = rec["table"], rec["protocol"]
    peers = ("magnitude", "wanda", "sparsegpt", "ria", "d2prune")

    def ms(v):
        return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f} (1 seed)"
    lines = ["# Headline: the recipe preset against the best peer", "",
             f"Model `{p['model']}`, calibration `{p['calib']}` {p['nsamples']} × {p['seqlen']}, "
             f"{p['eval_windows']} × {p['seqlen']} evaluation windows per text; perplexity, mean ± std over the "
             "calibration seeds run. `wiki` test is the other-domain text, `news:test` the in-domain one; the "
             "preset was chosen on `wiki:val` and `news:val` only. Verdict: the paired per-seed ratio preset ÷ best "
             "peer, beyond seed noise or not (`d2p_helpers.noise`). Generated by `studies/readme.py` "
             "from `results/recipes.json`.", "",
             "| setting | text | best peer | D²Prune | preset | preset ÷ best peer | verdict |",
             "|---|---|---|---|---|---|---|"]
    for s, cells in tab.items():
        if "preset" not in cells:
            continue
        for text in rec["reported"]:
            present = {k: cells[k] for k in peers if k in cells}
            best = min(present, key=lambda k: statistics.mean(present[k][text]))
            pr = paired_ratio(dict(zip(cells["preset"]["seeds"], cells["preset"][text])),
                              dict(zip(cells[best]["seeds"], cells[best][text])))
            d2 = ms(cells["d2prune"][text]) if "d2prune" in cells else "–"
            lines.append(f"| {s} | `{text}` ({DOMAIN.get(text, '')}) | {best} {ms(cells[best][text])} | {d2} | "
                         f"{ms(cells['preset'][text])} | {pr['mean']:.3f} | {VERDICT_WORD[pr['verdict']]} |")
    return "\n".join(lines) + "\n"


def error_correction_headline() -> str:
    """The error-correction study's current choice against the best peer on each calibration text, with its
    exact flags and cost, from results/error_correction.json (the study is still running: it says how far)."""
    from studies import error_correction as ec
    rec = json.loads(ec.SAVED.read_text())
    preset, p = rec["preset"], rec["protocol"]
    if not preset:
        return ""
    seeds = {r["paired"]["n"] for r in rec["verdicts"] if r["paired"]}
    lines = ["", "## Error correction toward the dense model: validation's choice so far", "",
             f"`d2p prune {' '.join(preset['flags'])}` (`{preset['label']}`), chosen on `wiki:val` and `news:val` "
             "among the candidates without `--sequential` (out of the pool by its cost). Calibration `news` "
             f"{p['nsamples']} × {p['seqlen']} (or "
             f"`{rec['mix']}` for `@mix`), up to {p['eval_windows']} × {p['seqlen']} evaluation windows per text; "
             f"{rec['runs_present']} of {rec['runs_planned']} planned runs, up to {max(seeds, default=0)} "
             "calibration seed(s) per cell. Generated by `studies/readme.py` from `results/error_correction.json`.",
             "", "| setting | text | peers' calibration | best peer | choice | choice ÷ peer (paired) | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rec["verdicts"]:
        lines.append(f"| {r['setting']} | `{r['text']}` ({DOMAIN[r['text']]}) | `{r['peer_calib']}` | {r['peer']} "
                     f"{ec._ms(r['peer_ppl'])} | {ec._ms(r['ppl'])} | {ec.ratio_cell(r['paired'])} | {r['verdict']} |")
    cost = ec.saved_cost(preset["label"])
    if cost:
        from studies.timing import cost_text
        lines += ["", "Prune time ÷ SparseGPT's, in one process: "
                  + cost_text(cost["seconds"], cost["ratio"], "sparsegpt", preset["label"]) + ". Target: within 2×."]
    return "\n".join(lines) + "\n"


def block_text(name: str) -> str:
    path = ROOT / BLOCKS[name]
    if not path.exists():
        return f"_Not measured yet: run the script that writes `{BLOCKS[name]}`._"
    body = path.read_text().strip().splitlines()
    body = [("#" + line) if line.startswith("#") else line for line in body]   # demote headings one level
    return f"_From `{BLOCKS[name]}` (generated; do not edit here)._\n\n" + "\n".join(body)


def render(text: str, names=None) -> str:
    for name in names or BLOCKS:
        pattern = re.compile(rf"(<!-- {name}:start -->)\n.*?(<!-- {name}:end -->)", re.S)   # empty blocks too
        text = pattern.sub(lambda m: f"{m.group(1)}\n{block_text(name)}\n{m.group(2)}", text)
    return text


def main() -> int:
    from d2p_helpers.record import write_text
    write_text(ROOT / BLOCKS["headline"], headline())
    write_text(ROOT / BLOCKS["notebooks"], notebook_plan())
    for page, names in PAGES.items():
        path = ROOT / page
        path.write_text(render(path.read_text(), names))
    print("[readme] tables refreshed from results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
