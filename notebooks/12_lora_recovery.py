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
steps: int = 200                # LoRA steps (CPU default; the paper: one epoch of 30k C4 samples)
train_seqlen: int = 128         # tokens per training window
lora_r: int = 8                 # LoRA rank (paper: 8)
lora_alpha: int = 16            # LoRA alpha (paper: 16)
eval_data: str = "wiki"         # evaluation text
eval_windows: int = 8           # perplexity windows
zeroshot_tasks: list = ["hellaswag", "piqa", "arc_easy"]  # zero-shot tasks (fast scorer)
zeroshot_limit: int = 100       # examples per task
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
import copy
from pathlib import Path

import matplotlib.pyplot as plt

from d2p_helpers import notebook, plots, zeroshot
from d2p_helpers.data import eval_windows as make_windows
from d2p_helpers.evaluate import perplexity
from d2p_helpers.experiments import dense_model
from d2p_helpers.finetune import finetune
from d2p_helpers.masks import sparsity_of
from d2p_helpers.models import projection
from d2p_helpers.prune import prune

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"
base, tok = dense_model(model)
win = make_windows(tok, eval_data, seqlen, eval_windows).ids

# %% [markdown]
# ## LoRA, merged sparsely
#
# LoRA trains $\Delta W = \frac{\alpha}{r} B A$ with $B \in \mathbb{R}^{d_\text{out}\times r}$,
# $A \in \mathbb{R}^{r\times d_\text{in}}$ and the pruned $W$ frozen. Merging $W + \Delta W$ would refill every
# zero, so we merge $W + M \odot \Delta W$ with $M = [W \neq 0]$: the model keeps its exact sparsity and N:M pattern.

# %%
def measure(m):
    zs = zeroshot.zeroshot_record(zeroshot.score_tasks(m, tok, zeroshot_tasks, zeroshot_limit, progress=False), "fast")
    return {"ppl": perplexity(m, win, progress=False), "zeroshot_mean": zs["zeroshot_mean"]}


rows = []
for setting in settings:
    shape = {"pattern": setting} if ":" in setting else {"sparsity": float(setting)}
    for method in methods:
        m = copy.deepcopy(base)
        prune(m, method, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed, tokenizer=tok, progress=False, **shape)
        before = measure(m)
        q_sparsity = sparsity_of(projection(m, 0, "q").weight)
        res = finetune(m, tok, out / "lora" / f"{method}_{setting}", calib, steps, lora_r, lora_alpha,
                       seqlen=train_seqlen, seed=seed)
        after = measure(res["model"])
        assert sparsity_of(projection(res["model"], 0, "q").weight) == q_sparsity
        rows.append({"setting": setting, "method": method, "before": before, "after": after,
                     "losses": res["log"]["losses"]})
        print(f"{setting:4s} {method:10s} ppl {before['ppl']:9.2f} -> {after['ppl']:9.2f}   "
              f"zero-shot {before['zeroshot_mean']:.3f} -> {after['zeroshot_mean']:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for r in rows:
    axes[0].plot(r["losses"], lw=1, label=f"{r['method']} {r['setting']}", color=plots.METHOD_COLORS.get(r["method"]),
                 ls="-" if ":" not in r["setting"] else "--")
labels = [f"{r['method']}\n{r['setting']}" for r in rows]
axes[1].bar([i - 0.2 for i in range(len(rows))], [r["before"]["ppl"] for r in rows], 0.4, label="pruned")
axes[1].bar([i + 0.2 for i in range(len(rows))], [r["after"]["ppl"] for r in rows], 0.4, label="+ LoRA")
axes[1].set_xticks(range(len(rows)), labels, fontsize=7), axes[1].set_yscale("log"), axes[1].legend(fontsize=8)
axes[0].set_xlabel("step"), axes[0].set_ylabel("training loss"), axes[0].legend(fontsize=7)
axes[1].set_ylabel(f"{eval_data} perplexity")
fig_lora = plots.save(fig, fig_dir / "12_lora_recovery.png",
                      caption=notebook.caption(model=model, steps=steps, lora=f"r={lora_r}, alpha={lora_alpha}, q/v", seed=seed))

# %%
notebook.finish(out, "12_lora_recovery",
                {"model": model, "methods": methods, "settings": settings, "calib": calib, "nsamples": nsamples,
                 "seqlen": seqlen, "seed": seed, "steps": steps, "train_seqlen": train_seqlen, "lora_r": lora_r,
                 "lora_alpha": lora_alpha, "eval_data": eval_data, "eval_windows": eval_windows,
                 "zeroshot_tasks": zeroshot_tasks, "zeroshot_limit": zeroshot_limit},
                {"rows": rows}, [fig_lora])
