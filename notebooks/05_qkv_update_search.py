# %% [markdown]
# # 05 · Which of q, k, v should not be updated? Three selectors
#
# **What you will learn.** D²Prune prunes one attention projection *without* an OBS weight update so the
# attention distribution keeps its long tail. The paper picks which one by three full prunings scored on the
# WikiText-2 **test** perplexity — a choice made on the test metric. Here are three selectors that never look
# at the evaluation text, and how they compare with the fixed choices.

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model to prune
sparsities: list = [0.5, 0.6, 0.7]  # unstructured sparsities to compare
calib: str = "news"             # calibration text (auto:ppl scores on its val split)
nsamples: int = 16              # calibration windows
seqlen: int = 256               # tokens per window
seed: int = 0                   # calibration seed
eval_data: str = "wiki"         # evaluation text (test split) for the table only
eval_windows: int = 16          # perplexity windows
use_results: bool = True        # read results/qkv_selectors.json when it matches these parameters
out_dir: str = "../runs/notebooks"  # JSON record and figures
cache_dir: str = "../results/cache"  # cached runs shared with studies/qkv_selectors.py

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt

from d2p_helpers import notebook, plots
from d2p_helpers.experiments import qkv_comparison, qkv_markdown

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"

# %% [markdown]
# ## The three selectors
#
# * **auto:ppl** — freeze the same projection in every block; try q, k and v and keep the one with the lowest
#   perplexity on the *validation* split of the calibration text (3 prunings).
# * **auto:kl** — per block, as the block is pruned, compute the paper's Eq. 12 objective for each candidate
#   $c \in \{q, k, v\}$ on calibration windows:
#   $$J(c) = \frac{\lVert A_c - A \rVert_F^2}{\lVert A\rVert_F^2} + \rho\,\overline{\mathrm{KL}}\big(P_c \,\Vert\, P\big),$$
#   with $A$, $A_c$ the dense and candidate attention outputs, $P$, $P_c$ their attention distributions,
#   and $\rho = 1$ by default (both terms are dimensionless). One pass per candidate per block.
# * **auto:outlier** — per block, freeze the projection with the highest outlier ratio (Appendix D). The
#   paper's Eq. 18 (|w| above the mean |w|) gives about 40% for any bell-shaped matrix and cannot produce its
#   Figure 11; the default counts D²-Wanda scores above 3× their mean, as the authors' `check_outlier_mean`.

# %%
base = {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
        "eval": [eval_data], "eval_windows": eval_windows}
results_file = Path("../results/qkv_selectors.json")
saved = json.loads(results_file.read_text()) if use_results and results_file.exists() else None
if saved and saved["protocol"] == base and sorted({r["sparsity"] for r in saved["rows"]}) == sorted(sparsities):
    rows, source = saved["rows"], str(results_file)
else:
    rows, source = qkv_comparison(base, sparsities, cache_dir, attention_windows=2), "live run"
print(f"source: {source}")
print(qkv_markdown(rows, base))
assert len(rows) == 8 * len(sparsities)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for label in dict.fromkeys(r["config"] for r in rows):
    rs = [r for r in rows if r["config"] == label]
    axes[0].plot([r["sparsity"] for r in rs], [r["ppl"] for r in rs], marker="o", label=label)
    axes[1].plot([r["sparsity"] for r in rs], [r["mean_kl"] for r in rs], marker="o", label=label)
axes[0].set_ylabel(f"{eval_data} perplexity"), axes[1].set_ylabel("mean attention KL")
for ax in axes:
    ax.set_xlabel("sparsity"), ax.set_yscale("log")
axes[0].legend(fontsize=7)
fig_qkv = plots.save(fig, fig_dir / "05_qkv_selectors.png",
                     caption=notebook.caption(model=model, calib=f"{calib} {nsamples}x{seqlen}", seed=seed))

# %%
notebook.finish(out, "05_qkv_update_search",
                {"model": model, "sparsities": sparsities, "calib": calib, "nsamples": nsamples, "seqlen": seqlen,
                 "seed": seed, "eval_data": eval_data, "eval_windows": eval_windows},
                {"source": source, "rows": rows}, [fig_qkv])
