# %% [markdown]
# # 11 · How sensitive is D²Prune to its knobs?
#
# **What you will learn.** The paper's hyper-parameter studies — the λ₁ × λ₂ grid, the activation scale $s$,
# the number of calibration windows $N$ — measured against calibration-seed noise, and one design flaw to
# watch: the authors' D² statistics are $k/N$-weighted **sums** divided by $s$, so the strength of the D²
# term relative to the OBS term changes with $N$. A normalised variant (`d2_norm="mean"`) fixes that.

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model
calib: str = "news"             # calibration text
nsamples: int = 16              # calibration windows (the N study varies it)
seqlen: int = 256               # tokens per window
eval_data: str = "wiki"         # evaluation text
eval_windows: int = 16          # perplexity windows
seeds: list = [0, 1]            # calibration seeds
lambda_grid: list = [0.0, 0.5, 1.0]  # values of lambda1 and lambda2
s_values: list = [500, 1000, 1500, 2000, "L", "auto"]  # activation scales (L: the window length; auto: d2_norm="mean")
n_values: list = [16, 32, 64, 128]  # calibration counts
sparsities: list = [0.5, 0.7]   # sparsities (the lambda and N studies use the highest)
use_results: bool = True        # read ../results/hparams.json when it matches
out_dir: str = "../runs/notebooks"  # JSON record and figures
cache_dir: str = "../results/cache"  # cached runs shared with bench/hparams.py

# %%
import json
import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from d2p_helpers import notebook, plots
from d2p_helpers.experiments import hparam_markdown, hparam_study
from d2p_helpers.paper import OPT125M_LAMBDA_80, OPT125M_NSAMPLES_80

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"

# %% [markdown]
# ## Why the authors' term depends on N
#
# With per-sample norms $\lVert y_i^{(k)}\rVert$ and $\lVert x_j^{(k)}\rVert$, the code accumulates
# $\hat y_i = \frac1s \sum_{k=1}^N \frac kN \lVert y_i^{(k)}\rVert \approx \frac{N+1}{2s}\,\overline{\lVert y_i\rVert}$,
# and the same for $\hat x_j$. The OBS term $W_{ij}^2/[H^{-1}]_{jj}$ uses $H = \frac2N\sum_k X^{(k)}X^{(k)\top}$, a
# mean. So the ratio of the two terms grows like $N^2$ (frozen path) or $N^{1.5}$ (update path): $s = 1500$ was
# tuned for $N = 128$. `d2_norm="mean"` uses means of the norms, scaled to equal the authors' term at
# $N = 128$: the same method at any $N$.

# %%
base = {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen, "eval": [eval_data],
        "eval_windows": eval_windows}
saved_file = Path("../results/hparams.json")
saved = json.loads(saved_file.read_text()) if use_results and saved_file.exists() else None
if saved and saved["protocol"] == base and saved["seeds"] == seeds:
    studies, source = saved["studies"], str(saved_file)
else:
    studies, source = hparam_study(base, seeds, lambda_grid, s_values, n_values, sparsities, cache_dir), "live run"
print(f"source: {source}")
print(hparam_markdown(studies, base, seeds))
assert studies["lambda"] and studies["s"] and studies["nsamples"]

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
grid = sorted({r["r1"] for r in studies["lambda"]})
mat = [[statistics.mean(next(r["ppl"] for r in studies["lambda"] if r["r1"] == a and r["r2"] == b)) for b in grid] for a in grid]
im = axes[0].imshow(mat, cmap="viridis_r")
axes[0].set_xticks(range(len(grid)), grid), axes[0].set_yticks(range(len(grid)), grid)
axes[0].set_xlabel("λ₂"), axes[0].set_ylabel("λ₁"), axes[0].set_title("ours: ppl over the λ grid")
fig.colorbar(im, ax=axes[0])
for sp in sorted({r["sparsity"] for r in studies["s"]}):
    rs = [r for r in studies["s"] if r["sparsity"] == sp]
    axes[1].errorbar([str(r["s"]) for r in rs], [statistics.mean(r["ppl"]) for r in rs],
                     yerr=[statistics.pstdev(r["ppl"]) for r in rs], marker="o", capsize=3, label=f"{sp:.0%}")
axes[1].set_xlabel("s"), axes[1].set_ylabel("ppl"), axes[1].set_title("ours: scale s"), axes[1].legend(fontsize=8)
for norm in ("authors", "mean"):
    rs = [r for r in studies["nsamples"] if r["d2_norm"] == norm]
    axes[2].errorbar([r["nsamples"] for r in rs], [statistics.mean(r["ppl"]) for r in rs],
                     yerr=[statistics.pstdev(r["ppl"]) for r in rs], marker="o", capsize=3, label=f"ours, {norm}")
ax2 = axes[2].twinx()
ax2.plot(list(OPT125M_NSAMPLES_80), list(OPT125M_NSAMPLES_80.values()), "k:", marker="s", label="paper OPT-125M, 80% (right axis)")
axes[2].set_xscale("log", base=2), axes[2].set_xlabel("calibration windows N"), axes[2].set_ylabel("ppl (ours)")
axes[2].set_title("N: ours vs the paper (another model)"), axes[2].legend(fontsize=7, loc="upper left"), ax2.legend(fontsize=7)
fig_h = plots.save(fig, fig_dir / "11_hyperparameters.png", caption=notebook.caption(model=model, calib=calib, seeds=seeds))
print("paper OPT-125M λ grid at 80% (another model): best", min(OPT125M_LAMBDA_80, key=OPT125M_LAMBDA_80.get))

# %%
notebook.finish(out, "11_hyperparameters",
                {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen, "eval_data": eval_data,
                 "eval_windows": eval_windows, "seeds": seeds, "lambda_grid": lambda_grid, "s_values": s_values,
                 "n_values": n_values, "sparsities": sparsities},
                {"source": source, "studies": studies}, [fig_h])
