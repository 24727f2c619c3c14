# %% [markdown]
# # 07 · Zero-shot accuracy of dense and pruned models
#
# **What you will learn.** How the field scores a language model on multiple-choice tasks without training
# (lm-evaluation-harness: the log-likelihood of each answer after the prompt; `acc` picks the highest,
# `acc_norm` the highest per character), which mean the paper reports, and what 50 % pruning costs.

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model
methods: list = ["sparsegpt", "d2prune"]  # pruning methods to compare with dense
sparsity: float = 0.5           # unstructured sparsity
calib: str = "news"             # calibration text
nsamples: int = 32              # calibration windows
seqlen: int = 512               # tokens per window
seed: int = 0                   # calibration seed
tasks: list = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "piqa"]  # tasks
limit: int = 100                # examples per task (None: the full validation split)
engine: str = "fast"            # fast (our batched scorer) or lm-eval (the harness itself)
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
import copy
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from d2p_helpers import notebook, plots, zeroshot
from d2p_helpers.experiments import dense_model
from d2p_helpers.prune import prune

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"

# %% [markdown]
# ## Scoring
#
# For a prompt $c$ and answer choices $a_1..a_m$ (each prefixed by a space, lm-eval's target delimiter),
#
# $$\ell_i = \sum_{t} \log p_\theta\big(a_{i,t} \mid c, a_{i,<t}\big), \qquad
# \mathrm{acc}: \arg\max_i \ell_i, \qquad \mathrm{acc\_norm}: \arg\max_i \ell_i / |a_i|_\text{chars}.$$
#
# The paper's mean averages `acc_norm` where a task has it (HellaSwag, ARC, OpenBookQA, PIQA) and `acc`
# elsewhere. Our `fast` engine reproduces lm-eval's numbers on the same prompts (a test checks it).

# %%
dense_lm, tok = dense_model(model)
results = {"dense": zeroshot.evaluate(dense_lm, tok, tasks, limit, engine)}
for method in methods:
    m = copy.deepcopy(dense_lm)
    prune(m, method, sparsity=sparsity, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed, tokenizer=tok)
    results[method] = zeroshot.evaluate(m, tok, tasks, limit, engine)
for name, r in results.items():
    print(f"{name:10s} mean {r['zeroshot_mean']:.4f}  " +
          "  ".join(f"{t} {v['acc_norm'] if v['acc_norm'] is not None else v['acc']:.3f}" for t, v in r["zeroshot"].items()))
print(zeroshot.MEAN_DEFINITION)
assert all(0 <= r["zeroshot_mean"] <= 1 for r in results.values())

# %%
fig, ax = plt.subplots(figsize=(9, 3.6))
width = 0.8 / len(results)
for i, (name, r) in enumerate(results.items()):
    vals = [v["acc_norm"] if v["acc_norm"] is not None else v["acc"] for v in r["zeroshot"].values()]
    ax.bar(np.arange(len(tasks)) + i * width, vals, width, label=name, color=plots.METHOD_COLORS.get(name))
ax.scatter(np.arange(len(tasks)) + 0.4 - width / 2, [zeroshot.chance(t) for t in tasks], marker="_", s=300,
           color="k", label="chance")
ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20), ax.set_ylabel("acc_norm (else acc)")
ax.set_title(f"Zero-shot, {limit} examples per task, {sparsity:.0%} sparsity"), ax.legend(fontsize=7)
fig_zs = plots.save(fig, fig_dir / "07_zero_shot.png",
                    caption=notebook.caption(model=model, calib=f"{calib} {nsamples}x{seqlen}", seed=seed, engine=engine))

# %%
notebook.finish(out, "07_zero_shot",
                {"model": model, "methods": methods, "sparsity": sparsity, "calib": calib, "nsamples": nsamples,
                 "seqlen": seqlen, "seed": seed, "tasks": tasks, "limit": limit, "engine": engine},
                results, [fig_zs])
