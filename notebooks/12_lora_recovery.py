# %% [markdown]
# # 12 · Does a pruning method's head start survive fine-tuning?
#
# **What you will learn.** How to recover some of what pruning lost with LoRA — small low-rank adapters on
# $W_q$ and $W_v$, as the paper's Table 4 — *without* giving back the sparsity: the LoRA update is merged only
# where the pruned weight is non-zero. We compare SparseGPT, Wanda and D²Prune before and after.

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model
methods: list = ["sparsegpt", "wanda", "d2prune"]  # pruning methods
settings: list = ["0.6", "2:4"]  # sparsities or N:M patterns
calib: str = "news"             # calibration text (also the fine-tuning text, its calib split)
nsamples: int = 16              # calibration windows
seqlen: int = 512               # calibration tokens per window
seed: int = 0                   # seed
steps: int = 100                # LoRA steps of 4 x train_seqlen tokens (CPU default; the paper: one epoch of 30k C4 samples)
train_seqlen: int = 128         # tokens per training window
lora_r: int = 8                 # LoRA rank (paper: 8)
lora_alpha: int = 16            # LoRA alpha (paper: 16)
eval_data: str = "wiki"         # evaluation text
eval_windows: int = 8           # perplexity windows
zeroshot_tasks: list = ["hellaswag", "piqa", "arc_easy"]  # zero-shot tasks (fast scorer)
zeroshot_limit: int = 100       # examples per task
use_results: bool = True        # read ../results/lora.json when its protocol matches these parameters
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt

from d2p_helpers import notebook, plots
from d2p_helpers.finetune import recovery_markdown, recovery_study

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"
protocol = {"model": model, "methods": methods, "settings": settings, "calib": calib, "nsamples": nsamples,
            "seqlen": seqlen, "seed": seed, "steps": steps, "train_seqlen": train_seqlen, "lora_r": lora_r,
            "lora_alpha": lora_alpha, "eval_data": eval_data, "eval_windows": eval_windows,
            "zeroshot_tasks": zeroshot_tasks, "zeroshot_limit": zeroshot_limit}

# %% [markdown]
# ## LoRA, merged sparsely
#
# LoRA trains $\Delta W = \frac{\alpha}{r} B A$ with $B \in \mathbb{R}^{d_\text{out}\times r}$,
# $A \in \mathbb{R}^{r\times d_\text{in}}$ and the pruned $W$ frozen. Merging $W + \Delta W$ would refill every
# zero, so we merge $W + M \odot \Delta W$ with $M = [W \neq 0]$: the model keeps its exact sparsity and N:M pattern.
#
# `recovery_study` prunes with each method, measures perplexity and zero-shot accuracy, trains LoRA on the
# calibration text (resumable from `out_dir/lora/…/checkpoint`), merges sparsely and measures again. At the default
# parameters it takes about an hour on two CPU cores, so the notebook reads `../results/lora.json`
# (written by `studies/lora.py` with exactly these parameters) when it matches.

# %%
saved_file = Path("../results/lora.json")
saved = json.loads(saved_file.read_text()) if use_results and saved_file.exists() else None
if saved and saved["protocol"] == protocol:
    study, source = saved, str(saved_file)
else:
    study, source = recovery_study(out / "lora", **protocol), "live run"
rows = study["rows"]
print(f"source: {source}\n")
print(recovery_markdown(study, protocol))
assert all(r["q_sparsity"][0] == r["q_sparsity"][1] for r in rows), "LoRA merge changed the sparsity"

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for r in rows:
    axes[0].plot(r["losses"], lw=1, label=f"{r['method']} {r['setting']}", color=plots.METHOD_COLORS.get(r["method"]),
                 ls="-" if ":" not in r["setting"] else "--")
labels = [f"{r['method']}\n{r['setting']}" for r in rows]
axes[1].bar([i - 0.2 for i in range(len(rows))], [r["before"]["ppl"] for r in rows], 0.4, label="pruned")
axes[1].bar([i + 0.2 for i in range(len(rows))], [r["after"]["ppl"] for r in rows], 0.4, label="+ LoRA")
axes[1].axhline(study["dense"]["ppl"], color="k", ls=":", lw=1, label="dense")
axes[1].set_xticks(range(len(rows)), labels, fontsize=7), axes[1].set_yscale("log"), axes[1].legend(fontsize=8)
axes[0].set_xlabel("step"), axes[0].set_ylabel("training loss"), axes[0].legend(fontsize=7)
axes[1].set_ylabel(f"{eval_data} perplexity")
fig_lora = plots.save(fig, fig_dir / "12_lora_recovery.png",
                      caption=notebook.caption(model=model, steps=steps, lora=f"r={lora_r}, alpha={lora_alpha}, q/v", seed=seed))

# %%
notebook.finish(out, "12_lora_recovery",
                protocol, {"source": source, "dense": study["dense"], "rows": rows}, [fig_lora])
