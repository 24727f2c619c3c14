# %% [markdown]
# # 01 · The dual Taylor expansion, derived and checked on a real layer
#
# **What you will learn.** Where D²Prune's score comes from: expanding a layer's output error in *both* its
# weights and its inputs, which terms the paper keeps and which it drops, and how big each one really is on
# a linear layer of a pretrained model fed real text. You will see that the weight term is SparseGPT's OBS
# saliency, that the update rule is unchanged, and how much the extra activation term moves the mask.

# %% tags=["parameters"]
model: str = "smollm2-135m"     # a pretrained model: the expansion is checked on its real weights
calib: str = "news"             # text that produces the layer inputs
nsamples: int = 8               # windows
seqlen: int = 256               # tokens per window
seed: int = 0                   # window sampling seed
block_index: int = 6            # which block
layer: str = "q"                # q, k, v: which attention projection
s: float = 1500.0               # the D² activation scale
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from d2p_helpers import models, notebook, plots
from d2p_helpers.calibration import attach_stats, capture_block_inputs, run_block
from d2p_helpers.data import calibration_windows
from d2p_helpers.experiments import dense_model
from d2p_helpers.prune.engine import PruneConfig, solve_linear

plots.style()
torch.manual_seed(seed)
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"

# %% [markdown]
# ## The error of a layer, as a function of weights *and* inputs
#
# Take one linear layer with dense weights $W_0 \in \mathbb{R}^{d_\text{out}\times d_\text{in}}$ and the
# activations it saw during calibration, $X_0 \in \mathbb{R}^{d_\text{in}\times T}$ ($T$ tokens). Its dense
# output is $Y_0 = W_0 X_0$. After pruning, the weights become $W = W_0 + \delta W$, and at test time the
# inputs differ from the calibration ones: $X = X_0 + \delta X$. The error is
#
# $$E(W, X) = \lVert W X - Y_0 \rVert_F^2 .$$
#
# The paper expands $\delta E = E(W, X) - E(W_0, X_0)$ to second order in the stacked variable $u = (w, x)$:
#
# $$\delta E \approx \nabla_u E^\top \delta u + \tfrac12\, \delta u^\top \begin{pmatrix} H_{11} & H_{12} \\ H_{21} & H_{22}\end{pmatrix} \delta u,
# \qquad H_{11} = \tfrac{\partial^2 E}{\partial w^2} \propto X_0 X_0^\top,\; H_{22} = \tfrac{\partial^2 E}{\partial x^2} \propto W_0^\top W_0,\; H_{12} = \tfrac{\partial^2 E}{\partial w\,\partial x}.$$
#
# Because $E$ is a squared norm of something *bilinear* in $(W, X)$, the expansion can be written exactly:
#
# $$\delta E = \underbrace{\lVert \delta W X_0\rVert^2}_{\text{weight (OBS) term}} + \underbrace{\lVert W_0 \delta X\rVert^2}_{\text{activation term}}
#  + \underbrace{2\langle \delta W X_0,\, W_0 \delta X\rangle}_{\text{cross term } H_{12}} + \underbrace{\text{terms with } \delta W\,\delta X}_{\text{3rd and 4th order}} .$$
#
# The first-order terms vanish: at $(W_0, X_0)$ the residual $W_0X_0 - Y_0$ is zero. The paper drops the cross
# blocks (arguing that LayerNorm makes $\mathbb{E}[x] = 0$) and everything above second order, and assumes the
# input shift is proportional to the input, $\delta x = \lambda x$ (notebook 02 tests that). Then $W_0\delta X = \lambda Y_0$
# and the activation part of the score involves the layer's output $y$: that is the "dual" term.

# %%
name, why = notebook.resolve_model(model, preferred=model)
lm, tok = dense_model(name)
adapter = models.get_adapter(lm)
blocks = adapter.blocks(lm)
block_index = min(block_index, len(blocks) - 1)
win = calibration_windows(tok, calib, nsamples, seqlen, seed)
inputs = capture_block_inputs(lm, blocks, [{"input_ids": w[None]} for w in win.ids], "cpu")
for b in range(block_index):
    inputs.hidden = run_block(blocks[b], inputs)

# %% [markdown]
# A forward hook on the chosen projection records its input $X_0$ (all calibration tokens as columns).

# %%
lin_name = adapter.qkv_names(blocks[block_index])[layer]
lin = adapter.linears(blocks[block_index])[lin_name]
captured = []
h = lin.register_forward_hook(lambda m, i, o: captured.append(i[0].detach().float().reshape(-1, i[0].shape[-1])))
run_block(blocks[block_index], inputs)
h.remove()
X0 = torch.cat(captured).t()                   # d_in x T
W0 = lin.weight.detach().float()
Y0 = W0 @ X0
print(f"block {block_index} {lin_name}: W0 {tuple(W0.shape)}, X0 {tuple(X0.shape)}")

# %% [markdown]
# ## Checking the expansion term by term
#
# We prune the layer with SparseGPT at 50 % to get a realistic $\delta W$, scale it by $t$, and shift the
# inputs by $\delta X = \lambda X_0$. The exact $\delta E$ must equal the sum of the four pieces to rounding.

# %%
stats, handles = attach_stats({"lin": lin}, gram={"lin"}, d2={"lin"}, device="cpu")
run_block(blocks[block_index], inputs)
for hd in handles:
    hd.remove()
Wp = solve_linear("sparsegpt", W0, stats["lin"], PruneConfig(method="sparsegpt", sparsity=0.5))[0]
dW_full = Wp - W0

# %% [markdown]
# We scale the update and the perturbation together, $\delta W = t\,\Delta W$ and $\delta X = \lambda X_0$ with
# $\lambda = 0.1t$: as $t \to 0$ everything above second order must vanish.

# %%
def pieces(t: float, lam: float) -> dict:
    dW, dX = t * dW_full, lam * X0
    exact = float(((W0 + dW) @ (X0 + dX) - Y0).pow(2).sum())
    weight = float((dW @ X0).pow(2).sum())
    act = float((W0 @ dX).pow(2).sum())
    cross = 2 * float(((dW @ X0) * (W0 @ dX)).sum())
    higher = exact - weight - act - cross
    return {"exact": exact, "weight": weight, "activation": act, "cross": cross, "higher": higher}


ts = [0.05, 0.1, 0.2, 0.5, 1.0]
sweep = {t: pieces(t, 0.1 * t) for t in ts}
for t, p in sweep.items():
    print(f"t={t:4.2f}: " + "  ".join(f"{k} {v:10.4g}" for k, v in p.items()))
second = sweep[ts[0]]
second_order_error = abs(second["exact"] - second["weight"] - second["activation"] - second["cross"]) / second["exact"]
assert second_order_error < 1e-2, second_order_error

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for key, style in [("exact", "k-"), ("weight", "o--"), ("activation", "s--"), ("cross", "^--"), ("higher", "x:")]:
    ax.plot(ts, [abs(sweep[t][key]) for t in ts], style, label=key if key != "cross" else "|cross|")
ax.set_xscale("log"), ax.set_yscale("log")
ax.set_xlabel(r"perturbation size $t$ ($\delta W = t\,\delta W_{50\%}$, $\delta X = 0.1\,t\,X_0$)"), ax.set_ylabel(r"$\delta E$ pieces")
ax.set_title(f"Exact error vs the expansion's terms ({lin_name}, block {block_index})"), ax.legend(fontsize=8)
fig_terms = plots.save(fig, fig_dir / "01_taylor_terms.png",
                       caption=notebook.caption(model=name, calib=f"{calib} {nsamples}x{seqlen}", seed=seed))

# %% [markdown]
# **Why the cross term is dropped.** The paper's argument is that $\langle \delta W X_0, W_0 \delta X\rangle$
# averages out. With $\delta X = \lambda X_0$ it is $2\lambda\langle \delta W X_0, Y_0\rangle$: the alignment
# between the pruning error and the dense output. Its cosine tells how much it can matter:

# %%
cos = float(((dW_full @ X0) * Y0).sum() / ((dW_full @ X0).norm() * Y0.norm()))
print(f"cosine(delta W X0, Y0) = {cos:+.4f}  (0 = the cross term vanishes)")

# %% [markdown]
# ## What the D² term adds to the OBS saliency
#
# The score of a weight on the update path is $S_{ij} = W_{ij}^2/[H^{-1}]_{jj} + \lambda_1 \hat y_i |W_{ij}| \hat x_j$
# (paper-spec §2.3). How large is the second term next to the first, and how many mask decisions does it change?

# %%
H = stats["lin"].hessian()
damped = H + 0.01 * torch.diag(H).mean() * torch.eye(H.shape[0])
obs = W0.pow(2) / torch.diag(torch.cholesky_inverse(torch.linalg.cholesky(damped)))[None, :]
y_hat, x_hat = stats["lin"].d2_stats(s, "update")
d2 = y_hat[:, None] * W0.abs() * x_hat[None, :]
ratio = (d2 / obs.clamp_min(1e-30)).flatten()
Wd2 = solve_linear("d2-sparsegpt", W0, stats["lin"], PruneConfig(method="d2prune", sparsity=0.5, s=s))[0]
changed = float(((Wd2 == 0) != (Wp == 0)).float().mean())
print(f"D² term / OBS term: median {ratio.median():.3g}, 90th pct {ratio.quantile(0.9):.3g}; "
      f"mask entries that differ from SparseGPT's: {100 * changed:.2f}%")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(torch.log10(ratio.clamp_min(1e-12)).numpy(), bins=80, color="#55a868")
ax.set_xlabel(r"$\log_{10}$ (D² term / OBS term), per weight"), ax.set_ylabel("weights")
ax.set_title(f"Size of the dual-Taylor term (s = {s:g}, N = {nsamples})")
fig_ratio = plots.save(fig, fig_dir / "01_d2_vs_obs.png")

# %%
notebook.finish(out, "01_dual_taylor_derivation",
                {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
                 "block_index": block_index, "layer": layer, "s": s},
                {"model_used": name, "linear": lin_name, "terms": {str(t): p for t, p in sweep.items()},
                 "second_order_rel_error_small": second_order_error, "cross_cosine": cos,
                 "d2_over_obs_median": float(ratio.median()), "d2_over_obs_p90": float(ratio.quantile(0.9)),
                 "mask_changed_fraction": changed},
                [fig_terms, fig_ratio])
