# %% [markdown]
# # 07 · Zero-shot accuracy of dense and pruned models
#
# **What you will learn.** How the field scores a language model on multiple-choice tasks without training
# (lm-evaluation-harness: the log-likelihood of each answer after the prompt; `acc` picks the highest,
# `acc_norm` the highest per character), which mean the paper reports, what 50 % pruning costs — and how large a
# difference must be before a few hundred examples per task can see it. Scoring every task takes tens of
# minutes on a CPU, so by default the notebook reads `results/zeroshot.json` (written by `studies/zeroshot.py`
# with these parameters) when it matches; `use_results=False` scores live. Symbols: [notation card](NOTATION.md).

# %% tags=["parameters"]
model: str = "smollm2-135m"     # model
methods: list = ["sparsegpt", "d2prune"]  # pruning methods to compare with dense
sparsity: float = 0.5           # unstructured sparsity
calib: str = "news"             # calibration text
nsamples: int = 16              # calibration windows
seqlen: int = 256               # tokens per window
seed: int = 0                   # calibration seed
tasks: list = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
               "openbookqa", "piqa"]  # tasks
limit: int = 200                # examples per task (None: the full validation split)
engine: str = "fast"            # fast (our batched scorer) or lm-eval (the harness)
use_results: bool = True        # read ../results/zeroshot.json when its protocol matches
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("07_zero_shot")

# %%
import copy
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from d2p_helpers import notebook, plots, zeroshot
from d2p_helpers.notebook import dense_model
from d2p_helpers.paper import OPT125M_ZEROSHOT_MEAN
from d2p_helpers.prune import prune
from studies.runs import saved_results

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
protocol = {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen,
            "seed": seed, "sparsity": sparsity, "limit": limit}
saved = (saved_results("../results/zeroshot.json", protocol)
         if use_results and engine == "fast" else None)
if saved and set(methods) <= set(saved["models"]) and all(
        t in saved["models"]["dense"]["zeroshot"] for t in tasks):
    results = {}
    for k in ["dense", *methods]:
        scores = {t: saved["models"][k]["zeroshot"][t] for t in tasks}
        results[k] = {"zeroshot": scores, "zeroshot_mean": zeroshot.paper_mean(scores)}
    source = "../results/zeroshot.json"
else:
    source = "live run"

# %%
if source == "live run":
    dense_lm, tok = dense_model(model)
    results = {"dense": zeroshot.evaluate(dense_lm, tok, tasks, limit, engine)}
    for method in methods:
        m = copy.deepcopy(dense_lm)
        prune(m, method, sparsity=sparsity, calib=calib, nsamples=nsamples, seqlen=seqlen,
              seed=seed, tokenizer=tok)
        results[method] = zeroshot.evaluate(m, tok, tasks, limit, engine)
print(f"source: {source}")
for name, r in results.items():
    print(f"{name:10s} mean {r['zeroshot_mean']:.4f}  " +
          "  ".join(f"{t} {v['acc_norm'] if v['acc_norm'] is not None else v['acc']:.3f}"
                    for t, v in r["zeroshot"].items()))
print(zeroshot.MEAN_DEFINITION)
assert all(0 <= r["zeroshot_mean"] <= 1 for r in results.values())

# %%
fig, ax = plt.subplots(figsize=(9, 3.6))
width = 0.8 / len(results)
for i, (name, r) in enumerate(results.items()):
    vals = [v["acc_norm"] if v["acc_norm"] is not None else v["acc"]
            for v in r["zeroshot"].values()]
    ax.bar(np.arange(len(tasks)) + i * width, vals, width, label=name,
           color=plots.method_color(name))
ax.scatter(np.arange(len(tasks)) + 0.4 - width / 2, [zeroshot.chance(t) for t in tasks],
           marker="_", s=300, color="k", label="chance")
ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=20)
ax.set_ylabel("acc_norm (else acc)")
ax.set_title(f"Zero-shot, {limit} examples per task, {sparsity:.0%} sparsity")
ax.legend(fontsize=7)
fig_zs = plots.save(fig, fig_dir / "07_zero_shot.png",
                    caption=notebook.caption(model=model,
                                             calib=f"{calib} {nsamples}x{seqlen}",
                                             seed=seed, engine=engine))

# %% [markdown]
# ## How big is the noise?
#
# With $n$ examples a task's accuracy $p$ has standard error $\sqrt{p(1-p)/n}$, and the unweighted mean over $K$
# tasks has $\mathrm{SE} = \frac1K\sqrt{\sum_k p_k(1-p_k)/n_k}$. Two models scored on the same examples are
# correlated, so the SE of their difference is at most $\sqrt{\mathrm{SE}_a^2 + \mathrm{SE}_b^2}$ — we use that bound.

# %%
def metric(v):
    return v["acc_norm"] if v["acc_norm"] is not None else v["acc"]


def mean_se(r):
    vals = [(metric(v), v.get("n") or limit)
            for v in r["zeroshot"].values() if v is not None]
    return (sum(p for p, _ in vals) / len(vals),
            math.sqrt(sum(p * (1 - p) / n for p, n in vals)) / len(vals))


stat = {name: mean_se(r) for name, r in results.items()}
for name, (mu, se) in stat.items():
    print(f"{name:10s} mean {mu:.4f} ± {se:.4f} (one standard error)")

# %% [markdown]
# ## What we learned

# %%
d_mu = (stat["d2prune"][0] - stat["sparsegpt"][0]
        if {"d2prune", "sparsegpt"} <= set(stat) else None)
d_se = math.hypot(stat["d2prune"][1], stat["sparsegpt"][1]) if d_mu is not None else None
paper_gap = (OPT125M_ZEROSHOT_MEAN["50"]["D2Prune"]
             - OPT125M_ZEROSHOT_MEAN["50"]["SparseGPT"])
display(Markdown(
    "* Mean over the tasks (acc_norm where a task has it, else acc): " + ", ".join(
        f"{k} {mu:.3f} ± {se:.3f}" for k, (mu, se) in stat.items())
    + f" ({limit} examples per task, source: {source}).\n"
    + (f"* D²Prune − SparseGPT = {100 * d_mu:+.1f} points, against a "
       f"noise of ±{100 * 2 * d_se:.1f} points (two standard errors): "
       f"{'within' if abs(d_mu) < 2 * d_se else 'beyond'} the noise. The paper's "
       f"OPT-125M gap at 50% is {paper_gap:+.2f} points (full task sets), "
       f"{'smaller than' if abs(paper_gap) < 100 * 2 * d_se else 'larger than'} our "
       "resolution.\n" if d_mu is not None else "")
    + f"* Pruning {sparsity:.0%} moves the mean by " + ", ".join(
        f"{k} {100 * (stat[k][0] - stat['dense'][0]):+.1f}"
        for k in stat if k != "dense") + " points from dense."))

# %% [markdown]
# **Discussion.**
# 1. BoolQ and RTE are two-way choices where a model can sit near a constant answer. How does that show in the
#    pruned models' scores?
# 2. How many examples per task would you need to resolve a one-point difference in the mean?

# %%
def constant_answer(task):
    """{choice: score of always giving it} on the scored examples; None without data."""
    try:
        docs = [zeroshot.build_doc(task, r) for r in zeroshot.load_rows(task, limit)]
    except (RuntimeError, OSError):
        return None
    return {c: sum(d.gold == i for d in docs) / len(docs)
            for i, c in enumerate(docs[0].choice_texts)}


def two_way_text(task):
    scores = ", ".join(f"{k} {metric(r['zeroshot'][task]):.3f}"
                       for k, r in results.items())
    const = constant_answer(task)
    if const is None:
        return f"`{task}`: {scores} (task data not found: no constant-answer score)"
    return (f"`{task}`: always "
            + ", always ".join(f"`{c}` {v:.3f}" for c, v in const.items())
            + f"; {scores}")


two_way = [t for t in ("boolq", "rte") if t in tasks]
moves = {(k, t): (metric(results[k]["zeroshot"][t])
                  - metric(results["dense"]["zeroshot"][t]))
         for k in results if k != "dense" for t in two_way}
move = max(moves, key=lambda kt: abs(moves[kt])) if moves else None
se_diff = d_se if d_se is not None else math.sqrt(2) * stat["dense"][1]
n_now = max(v.get("n") or limit for v in results["dense"]["zeroshot"].values())
grow = (2 * se_diff / 0.01) ** 2
need = math.ceil(grow * n_now)
try:
    short = [t for t in tasks if len(zeroshot.load_rows(t)) < need] if limit else None
except (RuntimeError, OSError):
    short = None
notebook.answers([
    ("A model that always gives one answer scores that answer's share of the examples: "
     + "; ".join(two_way_text(t) for t in two_way) + ". "
     "So a score near a constant answer's, or a change after pruning, can come from a "
     "shift in the preferred answer rather than from reading the passage. "
     + (f"The largest move from dense here is {move[0]} on `{move[1]}`, "
        f"{moves[move]:+.3f}." if move else "")
     if two_way else "Neither BoolQ nor RTE is among the scored tasks here."),
    ("Two standard errors of the difference must shrink to one point. The bound on that "
     f"standard error is {se_diff:.4f} at "
     + (f"{n_now} examples per task " if limit else "the full splits ")
     + ("(D²Prune − SparseGPT)" if d_se is not None
        else "(two models with the dense model's standard error)")
     + f"; it falls as 1/√n, so n must grow {grow:.1f}-fold"
     + (f": about {need} examples per task. " if limit else " over the full splits. ")
     + (f"Of the tasks, {', '.join(short) or 'none'} have fewer validation examples "
        "than that. " if short is not None else "")
     + "The bound ignores that both models see the same examples, so a paired test "
     "would need fewer."
     if grow > 1 else
     f"The present {n_now} examples per task already resolve it: two standard errors "
     f"of the difference are {100 * 2 * se_diff:.1f} points."),
])

# %% [markdown]
# **What to try next.** `use_results=False, limit=None` on a machine with time; `engine="lm-eval"` to score
# with the harness itself; `sparsity=0.7`, where the paper's gaps are larger.

# %%
notebook.finish(out, "07_zero_shot",
                {"model": model, "methods": methods, "sparsity": sparsity, "calib": calib,
                 "nsamples": nsamples, "seqlen": seqlen, "seed": seed, "tasks": tasks,
                 "limit": limit, "engine": engine, "use_results": use_results},
                {**results, "source": source, "mean_se": stat}, [fig_zs])
