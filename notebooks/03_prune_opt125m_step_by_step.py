# %% [markdown]
# # 03 · Pruning a language model, one block at a time
#
# **What you will learn.** What a post-training pruner actually does, step by step, on one real block: capture
# the block's inputs, collect activation statistics with hooks, score every weight, pick a mask, update the
# surviving weights (OBS), measure the error — then let the package run the same loop over every block and
# check the perplexity. The D²-SparseGPT solver is written out by hand in plain torch (score, per-block mask,
# OBS column update) and checked against the package; the rest of the notebook uses the package. The paper's
# model is OPT-125M; where it cannot be loaded (no hub here) we use the embedded SmolLM2-135M, and say so.
# Symbols: [notation card](NOTATION.md).

# %% tags=["parameters"]
model: str = "auto"             # auto: facebook/opt-125m if it loads, else smollm2-135m
method: str = "d2prune"         # magnitude|wanda|sparsegpt|d2-sparsegpt|d2-wanda|d2prune
sparsity: float = 0.5           # fraction of weights removed from every block's linears
pattern: str = ""               # N:M instead of sparsity, e.g. 2:4 (empty: unstructured)
calib: str = "news"             # calibration text
nsamples: int = 32              # calibration windows (paper: 128)
seqlen: int = 512               # tokens per window (paper: 2048)
seed: int = 0                   # calibration sampling seed
eval_data: str = "wiki"         # perplexity text (test split)
eval_windows: int = 16          # perplexity windows
block_index: int = 3            # the block we dissect by hand
device: str = "cpu"             # cpu or cuda
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("03_prune_opt125m_step_by_step")

# %%
import copy
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from d2p_helpers import models, notebook, plots
from d2p_helpers.calibration import attach_stats, capture_block_inputs, run_block
from d2p_helpers.data import calibration_windows, eval_windows as make_eval_windows
from d2p_helpers.evaluate import perplexity
from d2p_helpers.masks import lowest_overall
from d2p_helpers.notebook import dense_model
from d2p_helpers.prune import prune
from d2p_helpers.prune.config import PruneConfig
from d2p_helpers.prune.d2prune import d2_term
from d2p_helpers.prune.engine import relative_error, solve_linear, solver_plan
from d2p_helpers.prune.sparsegpt import inverse_cholesky

# %% [markdown]
# ## A 4 × 8 example you can follow on a whiteboard
#
# Before the real block, the whole D²-SparseGPT step on a weight $W \in \mathbb{R}^{4\times 8}$ (4 output rows,
# 8 inputs) fed $T = 16$ tokens $X \in \mathbb{R}^{8\times 16}$, pruned to 50% in two blocks of 4 columns.
# The layer Hessian is $H = 2XX^\top$ because the error $\lVert (W-\hat W)X\rVert^2$ is a quadratic in each row
# of $\hat W$ whose second derivative is $2XX^\top$; $U$ is the upper Cholesky factor of $H^{-1}$ (damped by 1%
# of its mean diagonal). OBS's saliency of removing $w_{ij}$ is $w_{ij}^2/[H^{-1}]_{jj}$ when it is removed
# first; the solver scores $w_{ij}^2/U_{jj}^2$, which is the same number for the column being processed, because
# $U_{jj}^2$ is the $[H^{-1}]_{jj}$ of the columns still left (later columns absorb earlier errors). D² adds
# $r_1\,\hat y_i\,|w_{ij}|\,\hat x_j$ ($\hat y$, $\hat x$: the output and input norms the authors accumulate).

# %%
g = torch.Generator().manual_seed(0)
W4 = torch.randn(4, 8, generator=g).round(decimals=1)
X4 = torch.randn(16, 8, generator=g)  # 16 tokens, 8 input channels (rows are tokens)
from d2p_helpers.calibration import LinearStats  # noqa: E402
st4 = LinearStats(8, 4, "cpu", gram=True, d2=True)
st4.add(X4, X4 @ W4.T)                # one calibration sample of 16 tokens
H4 = st4.hessian()                    # (2/N) X Xᵀ with N = 1 sample
U4, _ = inverse_cholesky(H4, 0.01)
# s = T = 16 (--auto-s); at s = 1500 it is ~0
y_hat, x_hat = st4.d2_stats(16.0, "update")
torch.set_printoptions(precision=3, sci_mode=False, linewidth=100)
print("W =", W4, "\ndiag H =", torch.diag(H4), "\ndiag U =", torch.diag(U4), sep="\n")
assert torch.allclose(H4, 2 * X4.T @ X4, rtol=1e-5)

# %% [markdown]
# Block 1 (columns 0–3): the score of every entry, the OBS part and the D² part side by side, and the mask
# (the 8 lowest of the 16 scores are pruned).

# %%
obs_part = W4[:, :4].pow(2) / torch.diag(U4)[:4].pow(2)
d2_part = d2_term(W4[:, :4], y_hat, x_hat[:4], 1.0, 0.0)
score4 = obs_part + d2_part
mask4 = lowest_overall(score4, 0.5)                          # True = pruned
print("OBS part:", obs_part, "D² part:", d2_part, "pruned (block 1):", mask4.int(),
      sep="\n")
print(f"the D² part is {float(d2_part.abs().max() / obs_part.abs().max()):.2%} "
      "of the OBS part at most here")

# %% [markdown]
# One column update: remove column 0's pruned entries and spread their error over columns 1–7 with row 0 of $U$:
# $e = w_{:,0} \odot m_{:,0} / U_{00}$, then $W_{:,j} \leftarrow W_{:,j} - e\,U_{0j}$ for $j \ge 0$.

# %%
Wc = W4.clone()
e0 = Wc[:, 0] * mask4[:, 0] / U4[0, 0]
Wc -= e0[:, None] * U4[0][None, :]
print("error of column 0:", e0, "W after column 0's update:", Wc, sep="\n")
assert torch.allclose(Wc[:, 0][mask4[:, 0]], torch.zeros(int(mask4[:, 0].sum())),
                      atol=1e-5)
cfg4 = PruneConfig(method="d2-sparsegpt", sparsity=0.5, blocksize=4, s=16.0)
W4_pkg = solve_linear("d2-sparsegpt", W4, st4, cfg4)[0]
# the package picks the very same block-1 mask
assert torch.equal(W4_pkg[:, :4] == 0, mask4)
print("the package's result for all 8 columns:", W4_pkg, sep="\n")

# %% [markdown]
# The model (`auto`: the paper's OPT-125M where it loads, else the embedded SmolLM2, and we say which) and the
# block we will prune by hand.

# %%
plots.style()
torch.manual_seed(seed)
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"
model_name, model_why = notebook.resolve_model(model)
print(f"model: {model_name} ({model_why})")
lm, tok = dense_model(model_name)   # already loaded by resolve_model when model is auto
lm.to(device)
adapter = models.get_adapter(lm)
blocks = adapter.blocks(lm)
block_index = min(block_index, len(blocks) - 1)

# %% [markdown]
# ## 1 · Calibration windows and the inputs of the first block
#
# $N$ windows of $L$ tokens are drawn from the calibration text. A pre-forward hook on block 0 records the
# hidden states $X^{(k)} \in \mathbb{R}^{L \times d}$ (and the keyword arguments the model passes, such as
# the rotary position embeddings), then stops the forward pass: nothing past block 0 runs.

# %%
win = calibration_windows(tok, calib, nsamples, seqlen, seed)
inputs = capture_block_inputs(lm, blocks, [{"input_ids": w[None]} for w in win.ids],
                              device)
print("block-0 inputs:", tuple(inputs.hidden.shape), "kwargs:",
      sorted(inputs.kwargs_by_batch[1]))
assert inputs.hidden.shape == (nsamples, seqlen, lm.config.hidden_size)

# %% [markdown]
# To dissect block `block_index` we need *its* inputs: run the dense blocks before it. (The real pruner feeds
# each block the outputs of the already **pruned** blocks before it; here we only look.)

# %%
for b in range(block_index):
    inputs.hidden = run_block(blocks[b], inputs)
block = blocks[block_index]
linears = adapter.linears(block)
print({n: tuple(l.weight.shape) for n, l in linears.items()})

# %% [markdown]
# ## 2 · Statistics, collected by hooks during one dense pass
#
# For every linear $W \in \mathbb{R}^{d_\text{out} \times d_\text{in}}$ with inputs $X^{(k)}$ and outputs
# $Y^{(k)} = W X^{(k)}$, the hooks accumulate (fp32):
#
# $$H = \tfrac{2}{N}\sum_k X^{(k)} X^{(k)\top}, \qquad \nu_j = \tfrac{1}{N}\sum_k \lVert x_j^{(k)} \rVert^2,\qquad
# \hat y_i = \tfrac{1}{s}\sum_k \tfrac{k}{N}\lVert y_i^{(k)}\rVert,\qquad \hat x_j = \tfrac{1}{s}\sum_k \tfrac{k}{N}\lVert x_j^{(k)}\rVert,$$
#
# $H$ is SparseGPT's Hessian of the layer's squared error, $\nu_j$ Wanda's input-channel energy, and
# $\hat y_i$, $\hat x_j$ the D² activation statistics as the authors' code accumulates them ($s = 1500$;
# $k/N$ weights come from its running update; on the update path $\hat x_j$ also carries SparseGPT's $\sqrt{2/k}$
# input scaling). Linears fed the same tensor (q/k/v) share their input part.

# %%
stats, handles = attach_stats(linears, gram=set(linears), d2=set(linears), device=device)
dense_out = run_block(block, inputs)
for h in handles:
    h.remove()
qkv = adapter.qkv_names(block)
st = stats[qkv["q"]]
print(f"{qkv['q']}: H {tuple(st.hessian().shape)}, nu {tuple(st.nu().shape)}, "
      f"samples {st.n}, tokens {st.inp.tokens}")
assert st.n == nsamples and torch.allclose(st.nu(), torch.diag(st.hessian()) / 2,
                                           rtol=1e-4)

# %% [markdown]
# ## 3 · The D²-SparseGPT solver, written out by hand
#
# We now build, in plain torch, what the package's solver does to one linear that is **updated** — the q
# projection of this block — and check it against `solve_linear("d2-sparsegpt", ...)` on the same inputs. Three
# pieces: the score, the mask chosen per 128-column block, and the OBS update that spreads each pruned weight's
# error over the columns to its right. (Symbols: [notation card](NOTATION.md).)
#
# **The factor $U$.** SparseGPT damps $H$ by 1 % of its mean diagonal, inverts it through a Cholesky
# factorisation and keeps the *upper* Cholesky factor of the inverse, $H^{-1} = U^\top U$. Row $i$ of $U$ is what
# eliminating column $i$ does to the columns after it; $U_{ii}^2$ is the inverse-Hessian diagonal at that point.

# %%
name = qkv["q"]
W = linears[name].weight.detach().float()
H = stats[name].hessian()
assert bool((torch.diag(H) > 0).all()), (
    "no dead input channel here (the solver would zero its column)")
Hd = H + 0.01 * torch.diag(H).mean() * torch.eye(H.shape[0])
U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)
inv64 = torch.linalg.inv(Hd.double())
recon = float((U.double().t() @ U.double() - inv64).norm() / inv64.norm())
assert torch.equal(U, U.triu()) and torch.allclose(U, inverse_cholesky(H, 0.01)[0])
# the D² statistics of section 2 (s = 1500)
y_hat, x_hat = stats[name].d2_stats(1500.0, "update")
print(f"{name}: W {tuple(W.shape)}, U {tuple(U.shape)} (|UᵀU − H⁻¹| / |H⁻¹| = "
      f"{recon:.1e} in fp32), y_hat {tuple(y_hat.shape)}, x_hat {tuple(x_hat.shape)}")

# %% [markdown]
# **The score** of weight $W_{ij}$ in a block of columns, with $d_j = U_{jj}$ (the authors' defaults $r_1 = 1$,
# $r_2 = 0$):
#
# $$S_{ij} = \frac{W_{ij}^2}{U_{jj}^2} + r_1\, \hat y_i\, |W_{ij}|\, \hat x_j - r_2\, W_{ij}^2 \hat x_j^2 .$$
#
# It is computed on the **current** weights of the block, after the earlier blocks' updates have changed them.

# %%
def d2_score(W1, d, xh, r1=1.0, r2=0.0):
    """S for the columns W1 [d_out x b] with U's diagonal d [b] and x_hat of those
    columns [b]."""
    return (W1.pow(2) / d.pow(2)[None, :] + r1 * y_hat[:, None] * W1.abs() * xh[None, :]
            - r2 * W1.pow(2) * xh.pow(2)[None, :])


B, i2 = 128, min(128, W.shape[1])
S1 = d2_score(W[:, :i2], torch.diag(U)[:i2], x_hat[:i2])
obs_part = W[:, :i2].pow(2) / torch.diag(U)[:i2].pow(2)[None, :]
assert torch.allclose(S1, obs_part + d2_term(W[:, :i2], y_hat, x_hat[:i2], 1.0, 0.0))
print(f"block 0 scores: {tuple(S1.shape)}, min {float(S1.min()):.3g}, "
      f"median {float(S1.median()):.3g}")

# %% [markdown]
# **The mask of one block.** Within the $d_\text{out}\times 128$ block, the $\lfloor p \cdot d_\text{out} \cdot 128\rfloor$
# lowest scores are pruned — across all rows together, so rows with large $\hat y_i$ keep more weights.

# %%
def block_mask(S, p):
    k = int(S.numel() * p)
    pruned = torch.zeros(S.numel(), dtype=torch.bool)
    pruned[torch.sort(S.flatten(), stable=True)[1][:k]] = True
    return pruned.view_as(S)


M1 = block_mask(S1, sparsity)
assert (torch.equal(M1, lowest_overall(S1, sparsity))
        and int(M1.sum()) == int(S1.numel() * sparsity))
rows_kept = (~M1).float().mean(1)
print(f"kept per row in block 0: min {float(rows_kept.min()):.2f}, "
      f"max {float(rows_kept.max()):.2f}")

# %% [markdown]
# **The OBS update, column by column.** For column $i$ of the block, the pruned entries' error
# $e = W_{:,i} \odot M_{:,i} / U_{ii}$ is subtracted along row $i$ of $U$ from every column to its right,
# $W_{:,i:} \leftarrow W_{:,i:} - e\, U_{i,i:}$ (paper Eq. 10's $\delta w$; the D² terms never enter it). The
# block's errors are kept to update the later blocks in one matrix product.

# %%
def obs_block(W1, pruned, U1):
    """Prune the block W1 [d_out x b] in place with OBS updates; returns its errors
    [d_out x b]."""
    err = torch.zeros_like(W1)
    for i in range(W1.shape[1]):
        err[:, i] = W1[:, i] * pruned[:, i] / U1[i, i]
        W1[:, i:] -= err[:, i:i + 1] * U1[i:i + 1, i:]
    W1.masked_fill_(pruned, 0)
    return err


cfg = PruneConfig(method="d2-sparsegpt", sparsity=sparsity)
W_pkg = solve_linear("d2-sparsegpt", W, stats[name], cfg)[0]
W1 = W[:, :i2].clone()
E1 = obs_block(W1, M1, U[:i2, :i2])
assert (torch.equal(W1 == 0, W_pkg[:, :i2] == 0)
        and torch.allclose(W1, W_pkg[:, :i2], atol=1e-5))

# %% [markdown]
# **All blocks.** After each block, its errors update the columns to the right at once,
# $W_{:,i_2:} \leftarrow W_{:,i_2:} - E\, U_{i_1:i_2,\, i_2:}$; the next block's scores are then computed on these
# updated weights. The whole solver, and the check against the package:

# %%
def d2_sparsegpt_by_hand(W, U, p, B=128):
    W = W.clone()
    for i1 in range(0, W.shape[1], B):
        i2 = min(i1 + B, W.shape[1])
        U1 = U[i1:i2, i1:i2]
        pruned = block_mask(d2_score(W[:, i1:i2], torch.diag(U1), x_hat[i1:i2]), p)
        err = obs_block(W[:, i1:i2], pruned, U1)
        W[:, i2:] -= err @ U[i1:i2, i2:]
    return W


W_hand = d2_sparsegpt_by_hand(W, U, sparsity)
hand_diff = float((W_hand - W_pkg).abs().max())
hand_same_mask = bool(torch.equal(W_hand == 0, W_pkg == 0))
assert hand_same_mask and torch.allclose(W_hand, W_pkg, atol=1e-4)
print(f"by hand vs package: same mask, max |difference| {hand_diff:.2e}")

# %% [markdown]
# ## 4 · Every linear of the block, by the package
#
# From here on the package does the work. D²Prune prunes every linear with the solver above except the
# **frozen** projection (v for the Llama family, k for OPT), whose score is $W_{ij}^2 \nu_j + r_1 \hat y_i
# |W_{ij}| \hat x_j - r_2 W_{ij}^2 \hat x_j^2$ per output row, with no update.

# %%
cfg = PruneConfig(method=method, sparsity=None if pattern else sparsity,
                  pattern=pattern or None)
frozen = {adapter.default_frozen()} if method == "d2prune" else set()
plan = solver_plan(method, list(linears), qkv, frozen)
new_weights, errors = {}, {}
for lname, lin in linears.items():
    old = lin.weight.detach().float()
    new_weights[lname] = solve_linear(plan[lname], old, stats[lname], cfg)[0]
    errors[lname] = relative_error(old, new_weights[lname], stats[lname].gram)
    print(f"{lname:22s} {plan[lname]:12s} sparsity "
          f"{float((new_weights[lname] == 0).float().mean()):.3f}  "
          f"rel. error {errors[lname]:.4f}")

# %% [markdown]
# **What a mask looks like.** Three views of the linear from section 3 (`linear`). (a) The fraction each output
# row keeps. SparseGPT and D²-SparseGPT choose the mask inside each 128-column block over all rows at once, so
# rows differ; Wanda keeps the same fraction in every row. (b) SparseGPT's mask against D²-SparseGPT's on a
# window of the matrix (where they disagree most), with the entries they disagree on in colour. (c) A 2:4 mask up close: exactly two of
# every four consecutive weights in a row are kept.

# %%
cfg_sgpt = PruneConfig(method="sparsegpt", sparsity=sparsity)
W_sgpt = solve_linear("sparsegpt", W, stats[name], cfg_sgpt)[0]
cfg_24 = PruneConfig(method="d2-sparsegpt", pattern="2:4")
W_24 = solve_linear("d2-sparsegpt", W, stats[name], cfg_24)[0]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), layout="constrained",
                         gridspec_kw={"width_ratios": [1, 1.3, 1]})
for label, Wm in (("SparseGPT", W_sgpt), ("D²-SparseGPT", W_pkg)):
    axes[0].hist((Wm != 0).float().mean(1).numpy(), bins=30, alpha=0.6, label=label,
                 color=plots.method_color(label.lower().replace("²", "2")))
axes[0].axvline(1 - sparsity, color="k", ls="--", lw=1, label="Wanda (every row)")
axes[0].set_xlabel("fraction of the row kept"), axes[0].set_ylabel("output rows")
axes[0].legend(fontsize=7), axes[0].set_title("(a) kept per output row", fontsize=9)
counts = plots.mask_difference(axes[1], W_sgpt, W_pkg, ("SparseGPT", "D²-SparseGPT"))
axes[1].set_title("(b) SparseGPT vs D²-SparseGPT: the 32 × 64 window where they "
                  "differ most", fontsize=9)
plots.nm_zoom(axes[2], W_24, 4)
axes[2].set_title("(c) D²-SparseGPT at 2:4, first 8 × 16", fontsize=9)
fig_masks = plots.save(fig, fig_dir / "03_masks.png")
differ = (counts["only SparseGPT keeps"] + counts["only D²-SparseGPT keeps"]) / W.numel()
# both keep the same count in every block, so their disagreements pair up
assert counts["only SparseGPT keeps"] == counts["only D²-SparseGPT keeps"]
assert bool(((W_24 != 0).reshape(W.shape[0], -1, 4).sum(-1) == 2).all())
print(f"the two masks disagree on {differ:.2%} of {name}'s weights")

# %% [markdown]
# ## 5 · What the update buys
#
# The reconstruction error of a linear is $\lVert (W - \hat W) X \rVert_F^2 / \lVert W X \rVert_F^2$ over the
# calibration inputs, computable from $H$ alone. Compare the OBS-updated solution with simply zeroing the same
# mask (no update):

# %%
name = qkv["q"]
old = linears[name].weight.detach().float()
zero_only = old.masked_fill(new_weights[name] == 0, 0)
err_update = relative_error(old, new_weights[name], stats[name].gram)
err_zero = relative_error(old, zero_only, stats[name].gram)
print(f"{name}: with OBS update {err_update:.4f}, same mask "
      f"without update {err_zero:.4f}")
if plan[name] != "d2-wanda":
    assert err_update <= err_zero + 1e-9

# %% [markdown]
# ## 6 · The whole loop, by the package
#
# `d2p_helpers.prune` repeats steps 2–5 for every block and — the part that makes it *sequential* — runs
# each pruned block to produce the next block's inputs. Here is the result on the full model.

# %%
ev = make_eval_windows(tok, eval_data, seqlen, eval_windows)
dense_ppl = perplexity(lm, ev.ids)
pruned = copy.deepcopy(lm)
report = prune(pruned, method, sparsity=None if pattern else sparsity,
               pattern=pattern or None, calib=calib, nsamples=nsamples, seqlen=seqlen,
               seed=seed, tokenizer=tok)
pruned_ppl = perplexity(pruned, ev.ids)
print(f"dense {dense_ppl:.2f} ({eval_data} test, {eval_windows} x {seqlen}: this "
      "notebook's protocol; each protocol's dense: results/dense_baselines.md)")
print(f"dense {dense_ppl:.2f} -> {method} {pruned_ppl:.2f}; sparsity "
      f"{report.achieved_sparsity:.4f}; {report.prune_seconds:.1f}s "
      f"({report.floor_ratio:.2f}x two forward passes)")
assert (abs(report.achieved_sparsity - (0.5 if pattern else sparsity)) < 0.01
        and pruned_ppl > dense_ppl * 0.9)

# %%
rows = report.per_linear
fig, ax = plt.subplots(figsize=(8, 3.2))
for lname in dict.fromkeys(r["name"] for r in rows):
    ax.plot([r["block"] for r in rows if r["name"] == lname],
            [r["rel_error"] for r in rows if r["name"] == lname], marker=".", label=lname)
ax.set_yscale("log"), ax.set_xlabel("block")
ax.set_ylabel("relative reconstruction error")
ax.set_title(f"{method} at {pattern or sparsity}: error per linear")
ax.legend(fontsize=7, ncol=4)
fig_err = plots.save(fig, fig_dir / "03_layer_error.png",
                     caption=notebook.caption(model=model_name,
                                              calib=f"{calib} {nsamples}x{seqlen}",
                                              seed=seed))

# %% [markdown]
# ## What we learned

# %%
display(Markdown(
    f"* Written out by hand, D²-SparseGPT on `{qkv['q']}` gives the package's "
    f"mask exactly and its weights to {hand_diff:.1e}: score, per-block mask and "
    "column-wise OBS update are all there is.\n"
    "* The OBS update cuts this layer's reconstruction error from "
    f"{err_zero:.4f} (same mask, weights just zeroed) to {err_update:.4f} "
    f"({err_zero / max(err_update, 1e-12):.1f}× smaller).\n"
    f"* Over the whole model, {method} at {pattern or sparsity} "
    f"takes perplexity from {dense_ppl:.2f} to {pruned_ppl:.2f} "
    f"({pruned_ppl / dense_ppl:.2f}×) in {report.prune_seconds:.0f} seconds "
    f"({report.floor_ratio:.2f}× two forward passes)."))

# %% [markdown]
# **Discussion.**
# 1. The mask of a block is chosen across all rows together. What would change if each row kept exactly half
#    of its weights (Wanda's choice)?
# 2. The scores of block 2 are computed *after* block 1's errors were pushed into it. Why does that matter for
#    which weights survive?
# 3. The frozen projection gets no update. Where in the layer-error plot would you look for its cost?

# %%
frozen_name = next((n for n in linears if plan[n] == "d2-wanda"), None)
updated = {n: e for n, e in errors.items() if n in qkv.values() and n != frozen_name}
notebook.answers([
    f"Every row would keep exactly {1 - sparsity:.0%}. In the matrix's first 128-column "
    f"block the rows keep between {float(rows_kept.min()):.0%} and "
    f"{float(rows_kept.max()):.0%}: the block-wide choice takes more from rows whose "
    "weights cost little to remove and less from rows that carry the output.",
    "The update moves each pruned weight's error into the columns to its right, so a "
    "later weight that compensates grows and scores higher. Scoring the original weights "
    "would prune weights the update has just made important.",
    ("Look at the frozen projection's own line: it gets the D²-Wanda mask with no "
     f"update, so its error is the zeroing error. In block {block_index}: {frozen_name} "
     f"{errors[frozen_name]:.4f} against "
     + ", ".join(f"{n} {e:.4f}" for n, e in updated.items())
     + ". Its cost also shows downstream, since the later blocks' inputs drift."
     if frozen_name else f"With method {method} no projection is frozen here."),
])

# %% [markdown]
# **What to try next.** `pattern="2:4"`; `method="sparsegpt"` and compare the layer errors; `block_index=0`;
# give `d2_sparsegpt_by_hand` a non-zero `r2` in `d2_score` and check it against
# `PruneConfig(..., r2=...)`; notebook 06 compares every method.

# %%
notebook.finish(out, "03_prune_opt125m_step_by_step",
                {"model": model, "method": method, "sparsity": sparsity,
                 "pattern": pattern, "calib": calib, "nsamples": nsamples,
                 "seqlen": seqlen, "seed": seed, "eval_data": eval_data,
                 "eval_windows": eval_windows},
                {"model_used": model_name, "model_choice": model_why,
                 "block": block_index, "block_errors": errors, "dense_ppl": dense_ppl,
                 "pruned_ppl": pruned_ppl, "achieved_sparsity": report.achieved_sparsity,
                 "prune_seconds": report.prune_seconds, "floor_ratio": report.floor_ratio,
                 "frozen_per_block": report.frozen_per_block,
                 "hand_same_mask": hand_same_mask, "hand_max_abs_diff": hand_diff,
                 "update_vs_zero_error": {"update": err_update, "zero_only": err_zero}},
                [fig_masks, fig_err])
