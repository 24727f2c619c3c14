# %% [markdown]
# # 08 · From 135M to 70B: the same pipeline on Llama-family models
#
# **What you will learn.** What changes when the model is a 7B–70B Llama or Qwen: nothing in the algorithm,
# everything in memory. The pruner only ever needs *one block* and the calibration activations on the device,
# so the arithmetic below tells you which GPU a model needs. We run the pipeline end to end on the embedded
# SmolLM2-135M — itself a Llama with grouped-query attention — through the helpers only. Symbols:
# [notation card](NOTATION.md).

# %% tags=["parameters"]
model: str = "smollm2-135m"     # Llama-family hub id (GPU machine) or the embedded one
method: str = "d2prune"         # pruning method
sparsity: float = 0.5           # unstructured sparsity
calib: str = "news"             # calibration text (c4 on a machine with the hub)
nsamples: int = 16              # calibration windows (paper: 128)
seqlen: int = 512               # tokens per window (paper: context length; LLaMA-2: 4096)
seed: int = 0                   # calibration seed
eval_data: str = "wiki"         # evaluation text (wikitext2 with the hub)
eval_windows: int = 8           # perplexity windows
dtype: str = "float32"          # bfloat16 or float16 on a GPU; statistics stay fp32
device: str = "cpu"             # cuda on a GPU machine
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("08_scale_to_llama")

# %%
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from d2p_helpers import models, notebook, plots
from d2p_helpers.data import eval_windows as make_windows
from d2p_helpers.evaluate import perplexity
from d2p_helpers.prune import prune
from d2p_helpers.scale import ARCHS, memory_plan

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"

# %% [markdown]
# ## Memory arithmetic
#
# With $N$ windows of $L$ tokens and hidden size $d$, the block inputs and outputs take $2 N L d$ numbers in
# the model's dtype; one block's linears take $\sum_\ell d^{\ell}_\text{out} d^{\ell}_\text{in}$; the largest
# Gram matrix $H \in \mathbb{R}^{d_\text{in}\times d_\text{in}}$ is fp32 (down_proj: $d_\text{in}$ = the MLP width).

# %%
plans = [memory_plan(name, 128) for name in ARCHS]
for p in plans:
    print(f"{p['model']:12s} weights {p['total_weights_gib']:6.1f} GiB | "
          f"on device: block {p['block_weights_gib']:.2f} + activations "
          f"{p['calibration_activations_gib']:5.1f} (N=128, L={p['seqlen']}) + Gram "
          f"{p['largest_gram_gib']:.2f} -> ~{p['device_peak_estimate_gib']:5.1f} GiB")
assert plans[0]["device_peak_estimate_gib"] < 24

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
names = [p["model"] for p in plans]
ax.barh(names, [p["total_weights_gib"] for p in plans], color="#cccccc",
        label="all weights (stay on CPU/disk)")
ax.barh(names, [p["device_peak_estimate_gib"] for p in plans], color="#55a868",
        label="needed on the GPU")
ax.set_xscale("log"), ax.set_xlabel("GiB (fp16 weights, 128 calibration windows)")
ax.legend(fontsize=8)
fig_mem = plots.save(fig, fig_dir / "08_memory.png")

# %% [markdown]
# ## The pipeline, end to end
#
# `d2p prune --model <llama> --dtype bfloat16 --device cuda --offload ...` is the same call as below; on a
# GPU, `device="cuda"` moves one block at a time while the model stays where it was loaded.

# %%
lm, tok = models.load_model(model, dtype=dtype)
summary = models.model_summary(lm)
print({k: summary[k] for k in ("model_type", "parameters", "blocks")},
      summary["linears_per_block"])
win = make_windows(tok, eval_data, seqlen, eval_windows)
dense_ppl = perplexity(lm, win.ids, device=device)
report = prune(lm, method, sparsity=sparsity, calib=calib, nsamples=nsamples,
               seqlen=seqlen, seed=seed, tokenizer=tok, device=device)
pruned_ppl = perplexity(lm, win.ids, device=device)
print(f"{model}: dense {dense_ppl:.2f} ({eval_data} test, {eval_windows} x {seqlen}; "
      "each protocol's dense: results/dense_baselines.md)")
print(f"{model}: dense {dense_ppl:.2f} -> {method} {pruned_ppl:.2f}, frozen "
      f"{set(report.frozen_per_block)}, {report.prune_seconds:.1f}s")
assert abs(report.achieved_sparsity - sparsity) < 0.01

# %% [markdown]
# ## What we learned

# %%
big = max(plans, key=lambda p: p["total_weights_gib"])
display(Markdown(
    "* On the device the pruner needs one block, the calibration activations "
    "and one Gram matrix: " + ", ".join(
        f"{p['model']} ~{p['device_peak_estimate_gib']:.1f} GiB of "
        f"{p['total_weights_gib']:.0f} GiB of weights" for p in plans)
    + f" (N = 128). The largest, {big['model']}, needs "
    f"{big['device_peak_estimate_gib'] / big['total_weights_gib']:.0%} "
    "of its weights' size on the GPU.\n"
    f"* The same code on `{model}`: dense {dense_ppl:.2f} → {method} {pruned_ppl:.2f} "
    f"at {sparsity:.0%} in {report.prune_seconds:.0f} seconds, frozen projection "
    f"{', '.join(sorted(set(report.frozen_per_block))) or 'none'}."))

# %% [markdown]
# **Discussion.**
# 1. The activations grow with $N \cdot L$; the Gram matrix with $d_\text{in}^2$. Which one limits LLaMA-3-70B?
# 2. What would you give up by keeping the calibration activations on the CPU and moving them per block?

# %%
p70 = next((p for p in plans if p["model"] == "LLaMA-3-70B"), big)
acts, grams = p70["calibration_activations_gib"], 3 * p70["largest_gram_gib"]
longer = memory_plan(p70["model"], 128, seqlen=2 * p70["seqlen"])
n_blocks = ARCHS[p70["model"]][2]
notebook.answers([
    ("The activations" if acts > grams else "The Gram matrices")
    + ("" if p70["model"] == "LLaMA-3-70B" else
       f" (LLaMA-3-70B is not in `ARCHS`, so take its largest, {p70['model']})")
    + f": N = 128 windows of L = {p70['seqlen']} take {acts:.1f} GiB, while the "
    f"largest Gram with its inverse and Cholesky takes {grams:.1f} GiB. The Gram does "
    f"not grow with N or L: at 2L the activations take "
    f"{longer['calibration_activations_gib']:.0f} GiB.",
    "Transfer time, not results: the arithmetic is the same. For a method that uses "
    "data the engine runs each block at least twice over the windows (statistics, then "
    "the pruned block's outputs), "
    "so each block would copy its inputs in and its outputs out twice: about "
    f"{2 * acts:.0f} GiB per block, {2 * acts * n_blocks:.0f} GiB over the "
    f"{n_blocks} blocks of {p70['model']}. In return the device peak drops from "
    f"~{p70['device_peak_estimate_gib']:.1f} to ~"
    f"{p70['device_peak_estimate_gib'] - acts:.1f} GiB.",
])

# %% [markdown]
# **What to try next.** On a GPU: `model="meta-llama/Llama-2-7b-hf", dtype="bfloat16", device="cuda",
# nsamples=128, seqlen=4096`; here: `method="sparsegpt"` and compare the prune seconds.

# %%
notebook.finish(out, "08_scale_to_llama",
                {"model": model, "method": method, "sparsity": sparsity, "calib": calib,
                 "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
                 "eval_data": eval_data, "eval_windows": eval_windows, "dtype": dtype,
                 "device": device},
                {"memory_plans": plans, "dense_ppl": dense_ppl, "pruned_ppl": pruned_ppl,
                 "prune_seconds": report.prune_seconds,
                 "summary": {k: v for k, v in summary.items()}},
                [fig_mem])
