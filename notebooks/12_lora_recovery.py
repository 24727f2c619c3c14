# %% [markdown]
# # 12 · Does a pruning method's head start survive fine-tuning?
#
# **What you will learn.** How to recover some of what pruning lost with LoRA — small low-rank adapters on
# $W_q$ and $W_v$, as the paper's Table 4 — *without* giving back the sparsity: the LoRA update is merged only
# where the pruned weight is non-zero. We compare SparseGPT, Wanda and D²Prune before and after. Symbols:
# [notation card](NOTATION.md).

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model
methods: list = ["sparsegpt", "wanda", "d2prune"]  # pruning methods
settings: list = ["0.6", "2:4"]  # sparsities or N:M patterns
calib: str = "news"             # calibration and fine-tuning text (its calib split)
nsamples: int = 16              # calibration windows
seqlen: int = 512               # calibration tokens per window
seed: int = 0                   # seed
# steps: a CPU default; the paper trains one epoch of 30k C4 samples
steps: int = 100                # LoRA steps of 4 x train_seqlen tokens
train_seqlen: int = 128         # tokens per training window
lora_r: int = 8                 # LoRA rank (paper: 8)
lora_alpha: int = 16            # LoRA alpha (paper: 16)
eval_data: str = "wiki"         # evaluation text
eval_windows: int = 8           # perplexity windows
zeroshot_tasks: list = ["hellaswag", "piqa", "arc_easy"]  # zero-shot tasks (fast scorer)
zeroshot_limit: int = 100       # examples per task
use_results: bool = True        # read ../results/lora.json when its protocol matches
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("12_lora_recovery")

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from d2p_helpers import notebook, plots
from studies.lora import RecoveryProtocol, recovery_study
from studies.runs import saved_results

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"
protocol = {"model": model, "methods": methods, "settings": settings, "calib": calib,
            "nsamples": nsamples, "seqlen": seqlen, "seed": seed, "steps": steps,
            "train_seqlen": train_seqlen, "lora_r": lora_r, "lora_alpha": lora_alpha,
            "eval_data": eval_data, "eval_windows": eval_windows,
            "zeroshot_tasks": zeroshot_tasks, "zeroshot_limit": zeroshot_limit}

# %% [markdown]
# ## LoRA, merged sparsely
#
# LoRA trains $\Delta W = \frac{\alpha}{r} B A$ with $B \in \mathbb{R}^{d_\text{out}\times r}$,
# $A \in \mathbb{R}^{r\times d_\text{in}}$ and the pruned $W$ frozen. Merging $W + \Delta W$ would refill every
# zero, so we merge $W + M \odot \Delta W$ with $M = [W \neq 0]$: the model keeps its exact sparsity and N:M pattern.
#
# `recovery_study` prunes with each method, measures perplexity and zero-shot accuracy, trains LoRA on the
# calibration text (resumable from `out_dir/lora/…/checkpoint`), merges sparsely and measures again. That takes a
# long time on a CPU (the recorded study's own time is computed below), so the notebook reads `../results/lora.json`
# (written by `studies/lora.py` with exactly these parameters) when it matches.

# %%
saved = saved_results("../results/lora.json", protocol) if use_results else None
if saved and saved["protocol"] == protocol:
    study, source = saved, "../results/lora.json"
else:
    study, source = recovery_study(out / "lora",
                                   RecoveryProtocol.from_dict(protocol)), "live run"
rows = study["rows"]
minutes = {k: sum(r.get(f"{k}_seconds", 0.0) for r in rows) / 60
           for k in ("prune", "train")}
print(f"source: {source}; the study's own time: {minutes['train']:.0f} "
      f"min of LoRA training + {minutes['prune']:.0f} min of pruning "
      f"({len(rows)} rows), besides evaluation")
assert all(r["q_sparsity"][0] == r["q_sparsity"][1] for r in rows), (
    "LoRA merge changed the sparsity")

# %% [markdown]
# 'recovered' is the share of the perplexity gap to dense that LoRA closed,
# $(\mathrm{PPL}_\text{pruned} - \mathrm{PPL}_\text{LoRA}) / (\mathrm{PPL}_\text{pruned} - \mathrm{PPL}_\text{dense})$.

# %%
dense_ppl = study["dense"]["ppl"]
table = pd.DataFrame([{"setting": r["setting"], "method": r["method"],
                       "ppl pruned": r["before"]["ppl"], "ppl + LoRA": r["after"]["ppl"],
                       "recovered": ((r["before"]["ppl"] - r["after"]["ppl"])
                                     / (r["before"]["ppl"] - dense_ppl)),
                       "zero-shot pruned": r["before"]["zeroshot_mean"],
                       "zero-shot + LoRA": r["after"]["zeroshot_mean"],
                       "train seconds": r.get("train_seconds")} for r in rows])
floatfmt = ("", "", ".2f", ".2f", ".2f", ".3f", ".3f", ".0f")
display(Markdown(f"Dense (this study's protocol, `{protocol['eval_data']}` "
                 f"{protocol['eval_windows']} × {protocol['seqlen']}; every "
                 "protocol's: `results/dense_baselines.md`): "
                 f"ppl {dense_ppl:.2f}, zero-shot "
                 f"{study['dense']['zeroshot_mean']:.3f}\n\n"
                 + table.to_markdown(index=False, floatfmt=floatfmt)))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for r in rows:
    axes[0].plot(r["losses"], lw=1, label=f"{r['method']} {r['setting']}",
                 color=plots.method_color(r["method"]),
                 ls="-" if ":" not in r["setting"] else "--")
labels = [f"{r['method']}\n{r['setting']}" for r in rows]
axes[1].bar([i - 0.2 for i in range(len(rows))], [r["before"]["ppl"] for r in rows], 0.4,
            label="pruned")
axes[1].bar([i + 0.2 for i in range(len(rows))], [r["after"]["ppl"] for r in rows], 0.4,
            label="+ LoRA")
axes[1].axhline(study["dense"]["ppl"], color="k", ls=":", lw=1, label="dense")
axes[1].set_xticks(range(len(rows)), labels, fontsize=7)
axes[1].set_yscale("log"), axes[1].legend(fontsize=8)
axes[0].set_xlabel("step"), axes[0].set_ylabel("training loss")
axes[0].legend(fontsize=7)
axes[1].set_ylabel(f"{eval_data} perplexity")
fig_lora = plots.save(fig, fig_dir / "12_lora_recovery.png",
                      caption=notebook.caption(
                          model=model, steps=steps,
                          lora=f"r={lora_r}, alpha={lora_alpha}, q/v", seed=seed))

# %% [markdown]
# ## What we learned

# %%
best_before = {st: min((r for r in rows if r["setting"] == st),
                       key=lambda r: r["before"]["ppl"])["method"] for st in settings}
best_after = {st: min((r for r in rows if r["setting"] == st),
                      key=lambda r: r["after"]["ppl"])["method"] for st in settings}
se_task = (0.25 / zeroshot_limit) ** 0.5
display(Markdown(
    "* Lowest perplexity before LoRA: "
    + ", ".join(f"{st} {m}" for st, m in best_before.items())
    + "; after LoRA: " + ", ".join(f"{st} {m}" for st, m in best_after.items())
    + (" — the head start survives." if best_before == best_after
       else " — the ranking changes after fine-tuning.") + "\n"
    + f"* LoRA closes {table['recovered'].min():.0%}–{table['recovered'].max():.0%} "
      f"of the gap to dense (dense ppl {dense_ppl:.2f}) in {steps} steps, keeping "
      "every sparsity pattern (checked above).\n"
    + "* Zero-shot means move by "
      f"{(table['zero-shot + LoRA'] - table['zero-shot pruned']).abs().max():.3f} at "
      f"most; with {zeroshot_limit} examples a single task's standard error is up to "
      f"{se_task:.3f}, so these moves are not resolved.\n"
    + f"* The recorded study took {minutes['train']:.0f} min of training and "
      f"{minutes['prune']:.0f} min of pruning."))

# %% [markdown]
# **Discussion.**
# 1. LoRA trains on the calibration text (`news`) and is scored on `wiki`. What would in-domain scores show?
# 2. Which share of the pruned gap can a rank-8 adapter on q and v close at most, and why only those two?

# %%
top_row = table.loc[table["recovered"].idxmax()]
notebook.answers([
    (f"How much of LoRA's gain is fitting `{calib}` itself. This study scores only "
     f"`{eval_data}`, where LoRA closed {table['recovered'].min():.0%}–"
     f"{table['recovered'].max():.0%} of the gap. If it closes much more on `{calib}`'s "
     f"test split (`eval_data=\"{calib}\"`; LoRA trains on the calib split), the adapter "
     "learned the text more than it repaired the model."
     if eval_data != calib else
     f"Here LoRA is already scored in domain (`{eval_data}`); scoring another text would "
     "show how much of its gain transfers."),
    "No share follows from the rank alone; here LoRA closed "
    f"{table['recovered'].min():.0%}–{table['recovered'].max():.0%} in {steps} steps, "
    f"most for {top_row['method']} at {top_row['setting']}. The adapter changes only q "
    "and v, and only at their kept weights (the merge is M ⊙ ΔW), so it cannot restore "
    "the other pruned linears, only offset them through attention. q and v follow the "
    "paper's Table 4 and keep the adapter small; the MLP is the next target to try.",
])

# %% [markdown]
# **What to try next.** `steps=400` (resumes from the checkpoints); `settings=["0.7"]`, where the pruned gap is
# larger; LoRA targets including the MLP.

# %%
notebook.finish(out, "12_lora_recovery",
                protocol, {"source": source, "dense": study["dense"], "rows": rows,
                           "minutes": minutes}, [fig_lora])
