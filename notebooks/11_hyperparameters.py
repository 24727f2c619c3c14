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
cache_dir: str = "../results/cache"  # cached runs shared with studies/hparams.py

# %%
import json
from pathlib import Path

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

# %% [markdown]
# Left to right: our λ grid, the paper's (OPT-125M at 80%: another model, shown for its shape), the scale $s$ at
# each sparsity, and the calibration count $N$ with both accumulations (error bars: spread over seeds).

# %%
fig = plots.hparam_figure(studies, OPT125M_LAMBDA_80, OPT125M_NSAMPLES_80)
fig_h = plots.save(fig, fig_dir / "11_hyperparameters.png", caption=notebook.caption(model=model, calib=calib, seeds=seeds))
print("paper OPT-125M λ grid at 80% (another model): best", min(OPT125M_LAMBDA_80, key=OPT125M_LAMBDA_80.get))

# %%
notebook.finish(out, "11_hyperparameters",
                {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen, "eval_data": eval_data,
                 "eval_windows": eval_windows, "seeds": seeds, "lambda_grid": lambda_grid, "s_values": s_values,
                 "n_values": n_values, "sparsities": sparsities},
                {"source": source, "studies": studies}, [fig_h])
