# %% [markdown]
# # 06 · Every method, side by side
#
# **What you will learn.** How much perplexity each pruning method loses at each sparsity — magnitude, Wanda,
# SparseGPT, the two D² ablations and D²Prune — how much of the gap is calibration-seed noise, and whether
# D²Prune's advantage on OPT-125M in the paper carries over to another model and text. By default the
# numbers come from the benchmark (`make bench` → `results/bench.json`); with `use_results=False` the
# notebook runs its own sweep with the parameters below.

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model for a live sweep
methods: list = ["magnitude", "wanda", "sparsegpt", "d2-sparsegpt", "d2-wanda", "d2prune"]  # methods
settings: list = ["0.5", "0.6", "0.7", "0.8", "2:4", "4:8"]  # sparsities or N:M patterns
calib: str = "news"             # calibration text
nsamples: int = 16              # calibration windows
seqlen: int = 256               # tokens per window
seed: int = 0                   # calibration seed (live sweep)
eval_data: str = "wiki"         # evaluation text (test split)
eval_windows: int = 16          # perplexity windows
use_results: bool = True        # read ../results/bench.json when present
out_dir: str = "../runs/notebooks"  # JSON record and figures
cache_dir: str = "../results/cache"  # cached live runs

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt

from d2p_helpers import notebook, plots
from d2p_helpers.experiments import method_table
from d2p_helpers.paper import opt125m_ppl

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"
bench_file = Path("../results/bench.json")

# %% [markdown]
# ## The numbers
#
# Each cell is the perplexity $\mathrm{PPL}$ on the evaluation text (mean ± standard deviation over
# calibration seeds where the benchmark ran several). The relative change of D²Prune against a baseline $b$ is
# $\Delta_b = \mathrm{PPL}_\text{D²Prune} / \mathrm{PPL}_b - 1$ (negative is better).

# %%
if use_results and bench_file.exists():
    bench = json.loads(bench_file.read_text())
    table = {k: {"mean": v[eval_data]["mean"], "std": v[eval_data]["std"], "n": len(v["seeds"])}
             for k, v in bench["table"].items()}
    source, protocol = str(bench_file), bench["protocol"]
else:
    protocol = {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
                "eval": [eval_data], "eval_windows": eval_windows}
    table, source = method_table(protocol, methods, settings, cache_dir), "live run"
print(f"source: {source}\nprotocol: {protocol}")
print(f"{'method':14s}" + "".join(f"{s:>16s}" for s in settings))
for m in methods:
    print(f"{m:14s}" + "".join(f"{table[f'{m}@{s}']['mean']:10.2f} ±{table[f'{m}@{s}']['std']:5.2f}"
                               if f"{m}@{s}" in table else f"{'–':>16s}" for s in settings))
assert "dense@0" in table

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for m in methods:
    xs = [s for s in settings if f"{m}@{s}" in table]
    ax.errorbar(xs, [table[f"{m}@{s}"]["mean"] for s in xs], yerr=[table[f"{m}@{s}"]["std"] for s in xs],
                marker="o", capsize=3, label=m, color=plots.METHOD_COLORS.get(m))
ax.axhline(table["dense@0"]["mean"], color="#444444", ls="--", lw=1, label="dense")
ax.set_yscale("log"), ax.set_xlabel("sparsity / pattern"), ax.set_ylabel(f"{eval_data} perplexity")
ax.set_title("Perplexity by method"), ax.legend(fontsize=7, ncol=2)
fig_cmp = plots.save(fig, fig_dir / "06_method_comparison.png", caption=notebook.caption(source=source))

# %% [markdown]
# ## Does the paper's advantage carry over?

# %%
rel = {}
for s in settings:
    ours = table.get(f"d2prune@{s}")
    paper = opt125m_ppl(s)
    for b, pb in (("sparsegpt", "SparseGPT"), ("wanda", "Wanda")):
        if ours and f"{b}@{s}" in table:
            rel[f"{s} vs {b}"] = {"ours": ours["mean"] / table[f"{b}@{s}"]["mean"] - 1,
                                  "paper_opt125m": paper["D2Prune"] / paper[pb] - 1 if paper else None}
for k, v in rel.items():
    p = f"{100 * v['paper_opt125m']:+.1f}%" if v["paper_opt125m"] is not None else "–"
    print(f"{k:20s} ours {100 * v['ours']:+.1f}%   paper (OPT-125M) {p}")

# %%
notebook.finish(out, "06_method_comparison",
                {"model": model, "methods": methods, "settings": settings, "calib": calib, "nsamples": nsamples,
                 "seqlen": seqlen, "seed": seed, "eval_data": eval_data, "eval_windows": eval_windows},
                {"source": source, "protocol": protocol, "table": table, "relative_change": rel}, [fig_cmp])
