# %% [markdown]
# # 03 · Pruning a language model, one block at a time
#
# **What you will learn.** What a post-training pruner actually does, step by step, on one real block: capture
# the block's inputs, collect activation statistics with hooks, score every weight, pick a mask, update the
# surviving weights (OBS), measure the error — then let the package run the same loop over every block and
# check the perplexity. The paper's model is OPT-125M; where it cannot be loaded (no hub here) we use the
# embedded SmolLM2-135M, and say so.

# %% tags=["parameters"]
model: str = "auto"             # auto: facebook/opt-125m where loadable, else the embedded smollm2-135m
method: str = "d2prune"         # magnitude | wanda | sparsegpt | d2-sparsegpt | d2-wanda | d2prune
sparsity: float = 0.5           # fraction of weights removed from every linear of every block
pattern: str = ""               # N:M instead of sparsity, for example 2:4 (empty: unstructured)
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
import copy
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from d2p_helpers import models, notebook, plots
from d2p_helpers.calibration import attach_stats, capture_block_inputs, run_block
from d2p_helpers.data import calibration_windows, eval_windows as make_eval_windows
from d2p_helpers.evaluate import perplexity
from d2p_helpers.experiments import dense_model
from d2p_helpers.prune import prune
from d2p_helpers.prune.engine import PruneConfig, relative_error, solve_linear, solver_plan

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
inputs = capture_block_inputs(lm, blocks, [{"input_ids": w[None]} for w in win.ids], device)
print("block-0 inputs:", tuple(inputs.hidden.shape), "kwargs:", sorted(inputs.kwargs_by_batch[1]))
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
# $k/N$ weights come from its running update). Linears fed the same tensor (q/k/v) share their input part.

# %%
stats, handles = attach_stats(linears, gram=set(linears), d2=set(linears), device=device)
dense_out = run_block(block, inputs)
for h in handles:
    h.remove()
qkv = adapter.qkv_names(block)
st = stats[qkv["q"]]
print(f"{qkv['q']}: H {tuple(st.hessian().shape)}, nu {tuple(st.nu().shape)}, samples {st.n}, tokens {st.inp.tokens}")
assert st.n == nsamples and torch.allclose(st.nu(), torch.diag(st.hessian()) / 2, rtol=1e-4)

# %% [markdown]
# ## 3 · Scores and masks
#
# D²Prune's score for a weight of a linear that will be **updated** adds the dual-Taylor activation term to
# SparseGPT's OBS saliency ($U$ is the upper Cholesky factor of $H^{-1}$, so $U_{jj}^2 = [H^{-1}]_{jj}$ after
# the previous columns are eliminated):
#
# $$S_{ij} = \frac{W_{ij}^2}{U_{jj}^2} + \lambda_1\, \hat y_i\, |W_{ij}|\, \hat x_j - \lambda_2\, W_{ij}^2 \hat x_j^2 .$$
#
# The lowest-scoring weights of each 128-column block are pruned. For the **frozen** projection (v for the
# Llama family, k for OPT) the score is $W_{ij}^2 \nu_j + \lambda_1 \hat y_i |W_{ij}| \hat x_j$ per output row,
# and the weights are not updated.

# %%
cfg = PruneConfig(method=method, sparsity=None if pattern else sparsity, pattern=pattern or None)
frozen = {adapter.default_frozen()} if method == "d2prune" else set()
plan = solver_plan(method, list(linears), qkv, frozen)
new_weights, errors = {}, {}
for name, lin in linears.items():
    old = lin.weight.detach().float()
    new_weights[name] = solve_linear(plan[name], old, stats[name], cfg)[0]
    errors[name] = relative_error(old, new_weights[name], stats[name].gram)
    print(f"{name:22s} {plan[name]:10s} sparsity {float((new_weights[name] == 0).float().mean()):.3f}  "
          f"rel. error {errors[name]:.4f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, role in zip(axes, "qkv"):
    plots.mask_image(ax, new_weights[qkv[role]], f"{qkv[role]} ({plan[qkv[role]]})")
fig.suptitle(f"Block {block_index}: kept (dark) vs pruned weights, first 64 x 128")
fig_masks = plots.save(fig, fig_dir / "03_masks.png")

# %% [markdown]
# ## 4 · What the update buys
#
# The reconstruction error of a linear is $\lVert (W - \hat W) X \rVert_F^2 / \lVert W X \rVert_F^2$ over the
# calibration inputs, computable from $H$ alone. Compare the OBS-updated solution with simply zeroing the same
# mask (no update):

# %%
name = qkv["q"]
old = linears[name].weight.detach().float()
zero_only = old.masked_fill(new_weights[name] == 0, 0)
err_update, err_zero = relative_error(old, new_weights[name], stats[name].gram), relative_error(old, zero_only, stats[name].gram)
print(f"{name}: with OBS update {err_update:.4f}, same mask without update {err_zero:.4f}")
if plan[name] != "d2-wanda":
    assert err_update <= err_zero + 1e-9

# %% [markdown]
# ## 5 · The whole loop, by the package
#
# `d2p_helpers.prune` repeats steps 2–4 for every block and — the part that makes it *sequential* — runs
# each pruned block to produce the next block's inputs. Here is the result on the full model.

# %%
ev = make_eval_windows(tok, eval_data, seqlen, eval_windows)
dense_ppl = perplexity(lm, ev.ids)
pruned = copy.deepcopy(lm)
report = prune(pruned, method, sparsity=None if pattern else sparsity, pattern=pattern or None, calib=calib,
               nsamples=nsamples, seqlen=seqlen, seed=seed, tokenizer=tok)
pruned_ppl = perplexity(pruned, ev.ids)
print(f"dense {dense_ppl:.2f} -> {method} {pruned_ppl:.2f}; sparsity {report.achieved_sparsity:.4f}; "
      f"{report.prune_seconds:.1f}s ({report.floor_ratio:.2f}x two forward passes)")
assert abs(report.achieved_sparsity - (0.5 if pattern else sparsity)) < 0.01 and pruned_ppl > dense_ppl * 0.9

# %%
rows = report.per_layer
fig, ax = plt.subplots(figsize=(8, 3.2))
for lname in dict.fromkeys(r["name"] for r in rows):
    ax.plot([r["block"] for r in rows if r["name"] == lname], [r["rel_error"] for r in rows if r["name"] == lname],
            marker=".", label=lname)
ax.set_yscale("log"), ax.set_xlabel("block"), ax.set_ylabel("relative reconstruction error")
ax.set_title(f"{method} at {pattern or sparsity}: error per linear"), ax.legend(fontsize=7, ncol=4)
fig_err = plots.save(fig, fig_dir / "03_layer_error.png",
                     caption=notebook.caption(model=model_name, calib=f"{calib} {nsamples}x{seqlen}", seed=seed))

# %%
notebook.finish(out, "03_prune_opt125m_step_by_step",
                {"model": model, "method": method, "sparsity": sparsity, "pattern": pattern, "calib": calib,
                 "nsamples": nsamples, "seqlen": seqlen, "seed": seed, "eval_data": eval_data, "eval_windows": eval_windows},
                {"model_used": model_name, "model_choice": model_why, "block": block_index,
                 "block_errors": errors, "dense_ppl": dense_ppl, "pruned_ppl": pruned_ppl,
                 "achieved_sparsity": report.achieved_sparsity, "prune_seconds": report.prune_seconds,
                 "floor_ratio": report.floor_ratio, "frozen_per_layer": report.frozen_per_layer},
                [fig_masks, fig_err])
