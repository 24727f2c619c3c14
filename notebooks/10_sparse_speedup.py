# %% [markdown]
# # 10 · Does 2:4 sparsity buy real speed?
#
# **What you will learn.** Unstructured sparsity saves nothing on today's hardware; the 2:4 pattern (two
# zeros in every four consecutive inputs) runs on NVIDIA's sparse tensor cores. We check that our 2:4 masks
# have the exact layout the kernels need, and — on a CUDA GPU — time dense against sparse GEMMs at the
# paper's LLaMA-7B shapes (its Table 16: about 1.3× on an A100). On a CPU there is no kernel: we say so.
# Symbols: [notation card](NOTATION.md).

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model to prune 2:4
method: str = "d2prune"         # pruning method
calib: str = "news"             # calibration text
nsamples: int = 16              # calibration windows
seqlen: int = 512               # tokens per window
seed: int = 0                   # calibration seed
tokens: int = 2048              # GEMM rows for the timing (paper: batch 1 x 2048)
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("10_sparse_speedup")

# %%
from pathlib import Path

import torch
from IPython.display import Markdown, display

from d2p_helpers import models, notebook, plots, speed
from d2p_helpers.prune import prune

plots.style()
out = Path(out_dir)
lm, tok = models.load_model(model)
report = prune(lm, method, pattern="2:4", calib=calib, nsamples=nsamples, seqlen=seqlen,
               seed=seed, tokenizer=tok)

# %% [markdown]
# ## The layout
#
# A 2:4 weight $W \in \mathbb{R}^{m\times k}$ keeps at most 2 of every 4 entries $W_{i,4g..4g+3}$. The
# kernels store the kept values ($m \times k/2$) and 2-bit indices; fp16 tiles also need $m$ divisible by
# 32 and $k$ by 64.

# %%
layout = speed.check_24_layout(lm)
some = lm.get_submodule(models.get_adapter(lm).blocks_path)[0]
w = next(iter(models.get_adapter(lm).linears(some).values())).weight
roundtrip = speed.cpu_roundtrip_24(w)
print(f"{layout['linears']} linears: all 2:4 valid {layout['all_valid']}, kernel shapes "
      f"{layout['all_kernel_shapes']}, CUTLASS pack/unpack round trip {roundtrip}")
assert layout["all_valid"]

# %%
timing = (speed.time_gemms(tokens) if torch.cuda.is_available()
          else {"skipped": speed.NO_CPU_KERNEL})
print(timing)

# %% [markdown]
# ## On a GPU: the paper's calibration size and the timings
#
# `studies/gpu_paper_protocol.py` runs the paper-N table's methods at 128 × 2048 and the 2:4 GEMM timings on a
# lent GPU, in one prepared run, and writes `results/gpu.md`. Shown here when it has run.

# %%
gpu_results = Path("../results/gpu.md")
if gpu_results.exists():
    display(Markdown(gpu_results.read_text()))
else:
    print("results/gpu.md: not measured yet (no GPU run so far); "
          "`python -m studies.gpu_paper_protocol` writes it")

# %% [markdown]
# ## What we learned

# %%
speed_text = (
    ("no sparse kernel on this machine: " + timing["skipped"]) if "skipped" in timing
    else f"2:4 ÷ dense GEMM on {timing.get('device')}: " + ", ".join(
        f"{k} {v['speedup']:.2f}×" for k, v in timing.items() if isinstance(v, dict)))
display(Markdown(
    f"* {method} at 2:4 leaves {report.achieved_sparsity:.1%} of the block weights zero; "
    f"all {layout['linears']} linears have a valid 2:4 layout ({layout['all_valid']}) "
    f"and kernel-compatible shapes ({layout['all_kernel_shapes']}); the CUTLASS "
    f"pack/unpack round trip is exact: {roundtrip}.\n"
    f"* Speed: {speed_text}."))

# %% [markdown]
# **Discussion.**
# 1. Why does unstructured 50 % sparsity give no speed-up on a GPU, while 2:4 can?
# 2. The paper times single linears at batch 1 × 2048 tokens. When would a whole model see less than that?

# %%
adapter = models.get_adapter(lm)
in_linears = sum(lin.weight.numel() for b in adapter.blocks(lm)
                 for lin in adapter.linears(b).values())
outside = 1 - in_linears / sum(p.numel() for p in lm.parameters())
notebook.answers([
    "Unstructured zeros fall anywhere, so a dense GEMM still multiplies them, and a "
    "general sparse format needs an index per kept weight and irregular memory access. "
    "2:4 keeps at most two of every four consecutive weights, so the kernel stores the "
    "kept half with 2-bit indices and the sparse tensor cores skip the zeros. "
    f"Here {method} at 2:4 leaves {report.achieved_sparsity:.1%} of the block weights "
    "zero, with " + ("a valid 2:4 layout in every linear" if layout["all_valid"]
                     else "some linears not 2:4-valid") + f" (speed: {speed_text}).",
    "When the pruned linears are only part of the work: attention over the sequence, "
    "the norms, the embeddings and the LM head stay dense, and "
    f"{outside:.0%} of `{model}`'s parameters lie outside the pruned block linears. "
    "Also with few tokens per call (decoding, `tokens=1`) a linear is limited by "
    "reading its weights more than by its multiplies, so the 1 × 2048 speed-up "
    "need not hold.",
])

# %% [markdown]
# **What to try next.** On an Ampere-or-newer GPU, `studies/gpu_check.sh OUT`; `tokens=1` to see the decode
# regime; notebook 06 for what 2:4 costs in perplexity.

# %%
notebook.finish(out, "10_sparse_speedup",
                {"model": model, "method": method, "calib": calib, "nsamples": nsamples,
                 "seqlen": seqlen, "seed": seed, "tokens": tokens},
                {"layout_valid": layout["all_valid"],
                 "kernel_shapes": layout["all_kernel_shapes"],
                 "cutlass_roundtrip": roundtrip, "timing": timing,
                 "achieved_sparsity": report.achieved_sparsity})
