# %% [markdown]
# # 04 · Does pruning flatten the attention distribution?
#
# **What you will learn.** The paper's second observation (its Figure 3): updating all of $W_q, W_k, W_v$
# with OBS flattens the long-tailed attention distribution, while leaving one of them un-updated keeps it.
# We measure it: per layer, the KL divergence between pruned and dense attention, the RMSE of the attention
# output, the peak attention and the entropy, for all-updated, none-updated and freeze-q/k/v.

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model to prune
sparsity: float = 0.5           # unstructured sparsity
calib: str = "news"             # calibration text
nsamples: int = 32              # calibration windows
seqlen: int = 512               # tokens per window
seed: int = 0                   # calibration seed
eval_data: str = "wiki"         # text for perplexity and the attention windows
eval_windows: int = 16          # perplexity windows
attention_windows: int = 4      # windows for the attention diagnostics
map_tokens: int = 128           # tokens shown in the attention-map figure (the paper uses 128)
out_dir: str = "../runs/notebooks"  # JSON record and figures
cache_dir: str = "../results/cache"  # reuse runs across notebooks and scripts

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from d2p_helpers import notebook, plots
from d2p_helpers.attention import head_averaged_map
from d2p_helpers.experiments import dense_model, prune_and_eval

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"

# %% [markdown]
# ## The measure
#
# For layer $\ell$, head $h$ and query position $t$, let $p_{h,t}$ and $q_{h,t}$ be the pruned and dense
# attention distributions over keys. We report
#
# $$\mathrm{KL}_\ell = \frac{1}{H\,T}\sum_{h,t} \sum_{j} p_{h,t}(j)\,\log\frac{p_{h,t}(j)}{q_{h,t}(j)},\qquad
# \mathrm{RMSE}_\ell = \sqrt{\operatorname{mean}\big(A^\text{pruned}_\ell - A^\text{dense}_\ell\big)^2},$$
#
# where $A_\ell$ is the attention module's output. "All updated" is D²-SparseGPT; "none updated" freezes all
# three projections (no OBS update on q, k, v); "freeze v" is D²Prune's default for the Llama family.

# %%
configs = {"all updated": {"method": "d2prune", "options": {"frozen": "none"}},
           "none updated": {"method": "d2prune", "options": {"frozen": "all"}},
           "freeze q": {"method": "d2prune", "options": {"frozen": "q"}},
           "freeze k": {"method": "d2prune", "options": {"frozen": "k"}},
           "freeze v": {"method": "d2prune", "options": {"frozen": "v"}},
           "SparseGPT": {"method": "sparsegpt", "options": {}}}
base = {"model": model, "sparsity": sparsity, "calib": calib, "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
        "eval": [eval_data], "eval_windows": eval_windows}
runs = {label: prune_and_eval({**base, **cfg}, cache_dir, attention_windows) for label, cfg in configs.items()}
for label, r in runs.items():
    a = r["attention"]
    print(f"{label:13s} ppl {r['ppl'][eval_data]:8.2f}  mean KL {a['mean_kl']:.4f}  mean RMSE {a['mean_rmse']:.4f}  logit KL {a['logit_kl']:.4f}")
assert all(r["attention"]["mean_kl"] >= 0 for r in runs.values())

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for label, r in runs.items():
    layers = [row["layer"] for row in r["attention"]["per_layer"]]
    axes[0].plot(layers, [row["kl"] for row in r["attention"]["per_layer"]], marker=".", label=label)
    axes[1].plot(layers, [row["rmse"] for row in r["attention"]["per_layer"]], marker=".", label=label)
axes[0].set_ylabel("KL(pruned || dense)"), axes[1].set_ylabel("attention-output RMSE")
for ax in axes:
    ax.set_xlabel("layer"), ax.set_yscale("log")
axes[0].legend(fontsize=7)
fig.suptitle(f"Attention fidelity per layer at {sparsity:.0%}")
fig_layers = plots.save(fig, fig_dir / "04_attention_kl_layers.png",
                        caption=notebook.caption(model=model, calib=f"{calib} {nsamples}x{seqlen}", seed=seed,
                                                 attention=f"{attention_windows} windows of {eval_data}"))

# %% [markdown]
# ## The picture (paper Figure 3)
#
# Head-averaged attention of the last layer on the first `map_tokens` tokens of the evaluation text, dense vs
# SparseGPT vs D²Prune (freeze v). The models are rebuilt from the same cached settings.

# %%
from d2p_helpers.data import eval_windows as make_windows
from d2p_helpers.prune import prune
import copy

dense_lm, tok = dense_model(model)
ids = make_windows(tok, eval_data, map_tokens, 1).ids
maps, peaks = {}, {}
for label in ("dense", "SparseGPT", "freeze v"):
    m = copy.deepcopy(dense_lm)
    if label != "dense":
        cfg = configs[label]
        prune(m, cfg["method"], sparsity=sparsity, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed,
              tokenizer=tok, progress=False, **cfg["options"])
    maps[label] = head_averaged_map(m, {"input_ids": ids})
    peaks[label] = float(maps[label][1:].max(-1).values.mean())

# %% [markdown]
# One colour scale for all three maps (the dense map's maximum without the first four queries and the first
# key, the attention sink), so that a flatter or sharper distribution shows as a paler or brighter diagonal.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
vmax = float(maps["dense"][4:, 1:].max())
for ax, (label, mp) in zip(axes, maps.items()):
    plots.attention_map(ax, mp, f"{label}: mean row peak {peaks[label]:.2f}", vmax=vmax)
fig_maps = plots.save(fig, fig_dir / "04_attention_maps.png")

# %%
notebook.finish(out, "04_attention_kl",
                {"model": model, "sparsity": sparsity, "calib": calib, "nsamples": nsamples, "seqlen": seqlen,
                 "seed": seed, "eval_data": eval_data, "eval_windows": eval_windows, "attention_windows": attention_windows},
                {"configs": {k: {"ppl": r["ppl"][eval_data], "mean_kl": r["attention"]["mean_kl"],
                                 "mean_rmse": r["attention"]["mean_rmse"], "logit_kl": r["attention"]["logit_kl"]}
                             for k, r in runs.items()},
                 "last_layer_mean_peak": peaks},
                [fig_layers, fig_maps])
