# %% [markdown]
# # 00 · Setup and data
#
# **What you will learn.** Where every byte of this project comes from when the network reaches nothing but
# PyPI: a real pretrained language model (SmolLM2-135M, a Llama-architecture decoder shipped inside a wheel),
# real English text (100 Wikipedia articles and 300 news articles shipped inside gensim's wheel), and how we
# measure a language model the way the pruning papers do — perplexity on non-overlapping windows of a test text.
# Every later notebook builds on these three pieces. Every symbol the notebooks use is on the
# [notation card](NOTATION.md).

# %% tags=["parameters"]
model: str = "smollm2-135m"     # embedded model, tiny-*: random test model, hub id/folder
eval_data: str = "wiki"         # evaluation text (test split)
seqlen: int = 1024              # tokens per perplexity window
eval_windows: int = 8           # number of windows (None: the whole test split)
seed: int = 0                   # seed for anything random
device: str = "cpu"             # cpu or cuda
out_dir: str = "../runs/notebooks"  # where the JSON record and figures go

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("00_setup_and_data")

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from IPython.display import Markdown, display

from d2p_helpers import data, models, notebook, plots
from d2p_helpers.evaluate import perplexity
from d2p_helpers.record import read_json

plots.style()
torch.manual_seed(seed)
out = Path(out_dir)
fig_dir = out / "figures"

# %% [markdown]
# ## The texts
#
# `wiki` and `news` are split **by article** into fixed, disjoint calibration, validation and test parts
# (article *i* goes to test when *i* mod 10 ∈ {0, 1}, to validation when it is 2, else to calibration), so a
# model is never calibrated on the text it is scored on. The paper calibrates on C4 and scores WikiText-2; here
# `news` plays C4's role (a different domain) and `wiki` WikiText-2's (same source: Wikipedia).

# %%
tok = models.load_tokenizer()
corpus = {}
for name in data.EMBEDDED_TEXTS:
    for split in data.SPLITS:
        arts = data.load_articles(name, split)
        corpus[f"{name}:{split}"] = {"articles": len(arts),
                                     "characters": sum(len(a) for a in arts),
                                     "tokens": len(data.tokenize(tok, "\n\n".join(arts)))}
for key, row in corpus.items():
    print(f"{key:12s} {row['articles']:4d} articles {row['characters']:>10,d} "
          f"chars {row['tokens']:>9,d} tokens")
assert set(data.load_articles("wiki", "test")).isdisjoint(
    data.load_articles("wiki", "calib"))

# %%
fig, ax = plt.subplots(figsize=(6, 3))
keys = list(corpus)
ax.barh(keys, [corpus[k]["tokens"] for k in keys],
        color=["#4c72b0"] * 3 + ["#dd8452"] * 3)
ax.set_xlabel("tokens (SmolLM2 tokenizer)"), ax.set_title("Embedded text, by split")
fig_corpus = plots.save(fig, fig_dir / "00_corpus_tokens.png")

# %% [markdown]
# ## The model's anatomy
#
# A pruning method sees a transformer as a stack of blocks, each a handful of `nn.Linear` layers. The
# architecture adapter (`d2p_helpers.models.get_adapter`) is the only code that knows where they are.

# %%
lm, tok = models.load_model(model, device=device)
summary = models.model_summary(lm)
print(json.dumps({k: v for k, v in summary.items() if k != "linears_per_block"},
                 indent=1))
for name, shape in summary["linears_per_block"].items():
    print(f"  {name:24s} {shape[0]:5d} x {shape[1]:5d}")
assert summary["prunable_parameters"] < summary["parameters"]

# %% [markdown]
# ## Dense perplexity, the paper's protocol
#
# Join the test articles with blank lines, tokenize, cut $n = \lfloor T / L \rfloor$ non-overlapping windows
# of $L$ tokens and report
#
# $$\mathrm{PPL} = \exp\Big(\frac{1}{n (L-1)} \sum_{w=1}^{n} \sum_{t=2}^{L} -\log p_\theta(x^{(w)}_t \mid x^{(w)}_{<t})\Big),$$
#
# where $x^{(w)}_t$ is token $t$ of window $w$ and $p_\theta$ the model's next-token distribution.

# %%
win = data.eval_windows(tok, eval_data, seqlen, eval_windows)
ppl = perplexity(lm, win.ids)
print(f"dense perplexity on {eval_data} test: {ppl:.3f} "
      f"({win.ids.shape[0]} x {seqlen} tokens)")
assert ppl == ppl and ppl > 1

# %% [markdown]
# ## One dense number per protocol
#
# Each study and notebook cuts the test text its own way ($W$ windows of $L$ tokens), so each has its own dense
# perplexity, and a ratio to dense is taken to its own protocol's row (`results/dense_baselines.md`, written by
# `python -m studies.dense_baselines`). At the defaults this notebook's number must equal its row.

# %%
from studies.dense_baselines import SAVED, row_for_cut  # noqa: E402
from studies.runs import same_run  # noqa: E402

rows = read_json(SAVED)["rows"]
display(Markdown(SAVED.with_suffix(".md").read_text().split("\n", 4)[4]))
mine = (row_for_cut([eval_data], eval_windows, seqlen, rows)
        if model == "smollm2-135m" else None)
if mine is not None:
    same_run({"this notebook": ppl, SAVED.name: mine["ppl"][eval_data]},
             f"dense {eval_data} {eval_windows} x {seqlen}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
for i, r in enumerate(sorted(rows, key=lambda r: (r["seqlen"], r["ppl"]["wiki"]))):
    side = -1 if i % 2 else 1          # alternate sides: labels at one L never collide
    xy = (r["seqlen"], r["ppl"]["wiki"])
    ax.scatter(*xy, s=12 + r["eval_windows"], color="#1f77b4")
    ax.annotate(r["name"], xy, fontsize=7, xytext=(6 * side, 2),
                textcoords="offset points", ha="left" if side > 0 else "right")
ax.set_xscale("log", base=2), ax.set_xlabel("tokens per window $L$")
lengths = sorted({r["seqlen"] for r in rows})
ax.set_xticks(lengths, [str(L) for L in lengths])
ax.set_xlim(lengths[0] / 1.6, lengths[-1] * 1.6)
ax.set_ylabel("dense perplexity, wiki test")
assert not plots.overlapping_texts(fig), plots.overlapping_texts(fig)
fig_dense = plots.save(fig, fig_dir / "00_dense_by_protocol.png",
                       caption=notebook.caption(model="smollm2-135m", data="wiki test"))

# %% [markdown]
# ## What we learned

# %%
test_tokens = {k: v["tokens"] for k, v in corpus.items() if k.endswith(":test")}
display(Markdown(
    f"* The embedded texts give {sum(r['tokens'] for r in corpus.values()):,} "
    "tokens in all; the test splits hold "
    + ", ".join(f"`{k}` {v:,}" for k, v in test_tokens.items()) + " tokens, "
    "disjoint from calibration by article.\n"
    f"* `{model}` has {summary['parameters'] / 1e6:.1f} M "
    f"parameters, {summary['prunable_parameters'] / 1e6:.1f} M "
    f"({summary['prunable_parameters'] / summary['parameters']:.0%}) of them "
    "in the block linears a pruner touches.\n"
    f"* Dense perplexity on `{eval_data}` test: {ppl:.2f} over {win.ids.shape[0]} "
    f"windows of {seqlen} tokens. Perplexity depends on the window length and "
    "count, so it is the dense baseline of *this* protocol only: each later notebook "
    "and result file evaluates the dense model under its own protocol and takes "
    "every ratio against that one, naming it"
    + (f" (its row, `{mine['name']}`, holds the same number)" if mine else "") + ". "
    f"The {len(rows)} protocols' dense `wiki` perplexities run from "
    f"{min(r['ppl']['wiki'] for r in rows):.2f} to "
    f"{max(r['ppl']['wiki'] for r in rows):.2f}."))

# %% [markdown]
# **Discussion.**
# 1. The embeddings and the LM head are not pruned. What share of the model stays dense, and why do the papers
#    leave it so?
# 2. Perplexity depends on the window length $L$. Would you expect it to go up or down with longer windows?
#
# **What to try next.** Set `seqlen=256` (the benchmark's windows) and compare the dense perplexity; set
# `eval_data="news"`; then open notebook 01 for the derivation of the score, or 03 to prune.


# %%
import statistics  # noqa: E402

by_len = {}
for r in rows:
    by_len.setdefault(r["seqlen"], []).append(r["ppl"]["wiki"])
means = [statistics.mean(v) for _, v in sorted(by_len.items())]
falls = all(a > b for a, b in zip(means, means[1:]))
notebook.answers([
    f"{1 - summary['prunable_parameters'] / summary['parameters']:.0%} of `{model}` "
    "stays dense: the embeddings (here tied to the LM head) and the norms. Every token's "
    "input and output passes through them, so an error there reaches every position, and "
    "they are a small share of a 7B model; the papers prune the block linears.",
    ("Down" if falls else "Not always")
    + ": a longer window gives each prediction more context, so the mean next-token loss "
    "tends to fall (the windows also cover different stretches of text). The protocols "
    "above: "
    + ", ".join(f"L = {L}: {statistics.mean(v):.2f}" for L, v in sorted(by_len.items()))
    + " (mean over the protocols at each L)."])

# %%
notebook.finish(out, "00_setup_and_data",
                {"model": model, "eval_data": eval_data, "seqlen": seqlen,
                 "eval_windows": eval_windows, "seed": seed},
                {"corpus": corpus, "model_summary": summary, "dense_ppl": ppl,
                 "eval": win.describe(), "dense_baselines": rows},
                [fig_corpus, fig_dense])
