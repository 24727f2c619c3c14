# %% [markdown]
# # 04 · Does pruning flatten the attention distribution?
#
# **What you will learn.** How to measure what pruning does to attention, and whether the paper's second
# observation holds here. The paper (its Figure 3 and the section on the attention-aware update) says that
# updating all of $W_q, W_k, W_v$ with OBS flattens the long-tailed attention distribution, and that leaving
# one of them un-updated keeps it. We measure, per layer, the KL divergence between pruned and dense attention,
# the RMSE of the attention output and the peak attention probability — for every q/k/v choice — and report
# what the numbers say, whichever way they go. Symbols: [notation card](NOTATION.md).

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model to prune
sparsity: float = 0.5           # unstructured sparsity
calib: str = "news"             # calibration text
nsamples: int = 16              # calibration windows (q/k/v study's protocol; paper: 128)
seqlen: int = 256               # tokens per window
seed: int = 0                   # calibration seed
eval_data: str = "wiki"         # text for perplexity and the attention windows
eval_windows: int = 16          # perplexity windows
attention_windows: int = 2      # windows for the attention diagnostics
map_tokens: int = 128           # tokens in the attention-map figure (the paper uses 128)
use_results: bool = True        # q/k/v table from qkv_selectors.json if protocol matches
results_dir: str = "../results"  # where qkv_selectors.json is
out_dir: str = "../runs/notebooks"  # JSON record and figures
cache_dir: str = "../results/run_cache"  # run cache (studies/runs.py) shared with scripts

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("04_attention_kl")

# %%
import copy
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from d2p_helpers import notebook, plots
from d2p_helpers.attention import compare_attention, head_averaged_map
from d2p_helpers.data import eval_windows as make_windows
from d2p_helpers.notebook import dense_model
from d2p_helpers.prune import prune
from studies.runs import prune_and_eval, saved_results

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"

# %% [markdown]
# ## The measures
#
# For layer $\ell$, head $h$ and query position $t$, let $p_{h,t}$ and $q_{h,t}$ be the pruned and dense attention
# distributions over keys. We report
#
# $$\mathrm{KL}_\ell = \frac{1}{H\,T}\sum_{h,t} \sum_{j} p_{h,t}(j)\,\log\frac{p_{h,t}(j)}{q_{h,t}(j)},\qquad
# \mathrm{RMSE}_\ell = \sqrt{\operatorname{mean}\big(A^\text{pruned}_\ell - A^\text{dense}_\ell\big)^2},\qquad
# \mathrm{peak}_\ell = \frac{1}{HT}\sum_{h,t}\max_j p_{h,t}(j),$$
#
# where $A_\ell$ is the attention module's output. "Flattening" means a lower peak than the dense model's. "All
# updated" is D²-SparseGPT; "none updated" freezes all three projections; "freeze v" is D²Prune's default for
# the Llama family.

# %% [markdown]
# ## Every q/k/v choice: perplexity and mean attention KL
#
# From the q/k/v study (`results/qkv_selectors.json`, same protocol) when it matches, else run here.

# %%
labels = {"freeze q": "q", "freeze k": "k", "freeze v": "v", "all updated": "none",
          "none updated": "all"}
study_names = {"all updated (none frozen)": "all updated",
               "no q/k/v updated (all frozen)": "none updated"}
base = {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen,
        "seed": seed, "eval": [eval_data], "eval_windows": eval_windows}
saved = (saved_results(Path(results_dir) / "qkv_selectors.json", base)
         if use_results else None)
rows = [r for r in (saved or {}).get("rows", [])
        if r["sparsity"] == sparsity
        and study_names.get(r["config"], r["config"]) in labels]
configs = {study_names.get(r["config"], r["config"]):
           {"ppl": r["ppl"], "mean_kl": r["mean_kl"]} for r in rows}
source = (str(Path(results_dir) / "qkv_selectors.json") if len(configs) == len(labels)
          else "live run")

# %%
if source == "live run":
    for label, frozen in labels.items():
        r = prune_and_eval({**base, "method": "d2prune", "sparsity": sparsity,
                            "options": {"frozen": frozen}},
                           cache_dir, attention_windows)
        configs[label] = {"ppl": r["ppl"][eval_data],
                          "mean_kl": r["attention"]["mean_kl"]}
table = pd.DataFrame(configs).T.sort_values("mean_kl")
display(Markdown(f"source: {source}, {sparsity:.0%} sparsity\n\n"
                 + table.to_markdown(floatfmt=".4f")))
assert all(c["mean_kl"] >= 0 for c in configs.values())

# %% [markdown]
# ## Layer by layer: SparseGPT against D²Prune (freeze v)
#
# The two models of the paper's Figure 3, pruned here, compared with the dense model on `attention_windows`
# windows of the evaluation text. The same two models draw the attention maps below.

# %%
dense_lm, tok = dense_model(model)
windows = make_windows(tok, eval_data, seqlen, attention_windows).ids
pruned = {}
for label, method, options in (("SparseGPT", "sparsegpt", {}),
                               ("freeze v", "d2prune", {"frozen": "v"})):
    m = copy.deepcopy(dense_lm)
    prune(m, method, sparsity=sparsity, calib=calib, nsamples=nsamples, seqlen=seqlen,
          seed=seed, tokenizer=tok, progress=False, **options)
    pruned[label] = m
fidelity = {label: compare_attention(m, dense_lm, windows, progress=False)
            for label, m in pruned.items()}
for label, f in fidelity.items():
    print(f"{label:10s} mean KL {f['mean_kl']:.4f}  mean RMSE {f['mean_rmse']:.4f}  "
          f"logit KL {f['logit_kl']:.4f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
for label, f in fidelity.items():
    layers = [row["block"] for row in f["per_block"]]
    axes[0].plot(layers, [row["kl"] for row in f["per_block"]], marker=".", label=label)
    axes[1].plot(layers, [row["rmse"] for row in f["per_block"]], marker=".", label=label)
    axes[2].plot(layers,
                 [row["peak_pruned"] / row["peak_dense"] for row in f["per_block"]],
                 marker=".", label=label)
axes[2].axhline(1, color="#444444", lw=1, ls="--", label="dense")
axes[0].set_ylabel("KL(pruned || dense)"), axes[1].set_ylabel("attention-output RMSE")
axes[2].set_ylabel("peak attention ÷ dense (below 1: flatter)")
for ax in axes:
    ax.set_xlabel("layer"), ax.legend(fontsize=7)
axes[0].set_yscale("log"), axes[1].set_yscale("log")
fig.suptitle(f"Attention fidelity per layer at {sparsity:.0%}")
fig_layers = plots.save(
    fig, fig_dir / "04_attention_kl_layers.png",
    caption=notebook.caption(model=model, calib=f"{calib} {nsamples}x{seqlen}", seed=seed,
                             attention=f"{attention_windows} windows of {eval_data}"))

# %% [markdown]
# ## The picture (paper Figure 3)
#
# Head-averaged attention of the last layer on the first `map_tokens` tokens of the evaluation text. Side by side,
# pruned maps look like the dense one: the changes are a few hundredths of a probability. So the first panel is
# the dense map, and the other two show what pruning changed, pruned − dense, on one diverging scale (red: more
# attention than the dense model, blue: less). The dense scale leaves out the first four queries and the first key
# (the attention sink).

# %%
ids = make_windows(tok, eval_data, map_tokens, 1).ids
maps = {"dense": head_averaged_map(dense_lm, {"input_ids": ids})}
maps.update({label: head_averaged_map(m, {"input_ids": ids})
             for label, m in pruned.items()})
peaks = {label: float(mp[1:].max(-1).values.mean()) for label, mp in maps.items()}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
vmax = float(maps["dense"][4:, 1:].max())
fig.colorbar(plots.attention_map(axes[0], maps["dense"],
                                 f"dense: mean row peak {peaks['dense']:.2f}", vmax),
             ax=axes[0], shrink=0.8)
diffs = {label: maps[label] - maps["dense"] for label in pruned}
lim = max(float(d[4:, 1:].abs().max()) for d in diffs.values())
for ax, (label, d) in zip(axes[1:], diffs.items()):
    im = plots.attention_map(ax, d, f"{label} − dense (peak {peaks[label]:.2f})", lim,
                             difference=True)
fig.colorbar(im, ax=axes[1:], shrink=0.8, label="attention change")
fig_maps = plots.save(fig, fig_dir / "04_attention_maps.png")
# total variation per row
change = {label: float(d.abs().sum(-1).mean()) / 2 for label, d in diffs.items()}

# %% [markdown]
# ## What we learned

# %%
def mean_peak_ratio(f):
    return (sum(r["peak_pruned"] / r["peak_dense"] for r in f["per_block"])
            / len(f["per_block"]))


kl = {k: v["mean_kl"] for k, v in configs.items()}
v_vs_all = kl["freeze v"] / kl["all updated"] - 1
flat = {label: mean_peak_ratio(f) for label, f in fidelity.items()}

# %%
display(Markdown(
    f"* At {sparsity:.0%}, freezing v changes the mean attention KL by "
    f"{100 * v_vs_all:+.1f}% against updating all three projections "
    f"({kl['freeze v']:.4f} vs {kl['all updated']:.4f}); the lowest KL is "
    f"**{min(kl, key=kl.get)}** ({min(kl.values()):.4f}), the highest "
    f"{max(kl, key=kl.get)} ({max(kl.values()):.4f}); one calibration seed.\n"
    f"* Peak attention, pruned ÷ dense, averaged over layers: SparseGPT "
    f"{flat['SparseGPT']:.3f}, freeze v {flat['freeze v']:.3f} (below 1 = flatter). "
    f"Last layer, mean row peak: dense {peaks['dense']:.3f}, "
    f"SparseGPT {peaks['SparseGPT']:.3f}, freeze v {peaks['freeze v']:.3f}. On the map, "
    f"pruning moves {change['SparseGPT']:.1%} (SparseGPT) and {change['freeze v']:.1%} "
    "(freeze v) of each query's attention to other keys (total variation, mean over "
    "queries).\n"
    f"* So here: freezing v {'lowers' if v_vs_all < 0 else 'does not lower'} the "
    "attention KL against all-updated, and SparseGPT "
    f"{'flattens' if flat['SparseGPT'] < 1 else 'does not flatten'} the attention on "
    f"average ({'more' if flat['SparseGPT'] < flat['freeze v'] else 'no more'} than "
    "freeze v). The paper's Figure 3 is one layer of LLaMA-2-7B; this is every layer of "
    "a 135M model."))

# %% [markdown]
# **Discussion.**
# 1. KL and peak measure different things: a pruned head can move its mass to other keys without getting flatter.
#    Which of the two does the paper's argument need?
# 2. The q/k/v table is one calibration seed. How would you find out whether its KL differences are larger than
#    seed noise?
# 3. Does a lower attention KL go with a lower perplexity in the table? What else does the frozen projection change?
#
# %%
kl_rank = sorted(kl, key=kl.get)
notebook.answers([
    "The paper's argument is about the distribution becoming flatter, which the peak "
    "ratio measures; KL counts any change of the distribution. Here SparseGPT's mean "
    f"peak ratio is {flat['SparseGPT']:.3f} and freeze v's {flat['freeze v']:.3f}, "
    f"while the KL ranks the choices {', '.join(kl_rank)}.",
    "Rerun the q/k/v study with two more calibration seeds (`use_results=False` and "
    "another `seed`) and compare each choice with freeze v per seed, with the paired "
    "rule notebook 06 uses.",
    "Compare the two orderings in the table: lowest KL "
    f"{kl_rank[0]}, lowest perplexity {min(configs, key=lambda c: configs[c]['ppl'])}. "
    "The frozen projection also keeps its weights un-updated by OBS, which changes the "
    "MLP's inputs and the residual stream, not only the attention pattern.",
])

# %% [markdown]
# **What to try next.** `sparsity=0.7` (the q/k/v study has it); `use_results=False, attention_windows=4` to
# measure every choice layer by layer; the last layer only of a larger model on a GPU; notebook 05 for choosing the
# frozen projection automatically.

# %%
notebook.finish(
    out, "04_attention_kl",
    {"model": model, "sparsity": sparsity, "calib": calib, "nsamples": nsamples,
     "seqlen": seqlen, "seed": seed, "eval_data": eval_data, "eval_windows": eval_windows,
     "attention_windows": attention_windows, "use_results": use_results},
    {"source": source, "configs": configs, "kl_freeze_v_vs_all_updated": v_vs_all,
     "fidelity": {k: {x: f[x] for x in ("mean_kl", "mean_rmse", "logit_kl")}
                  for k, f in fidelity.items()},
     "mean_peak_ratio": flat, "last_layer_mean_peak": peaks, "last_layer_change": change},
    [fig_layers, fig_maps])
