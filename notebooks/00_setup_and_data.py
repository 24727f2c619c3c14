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
    "every ratio against that one, naming it."))

# %% [markdown]
# **Discussion.**
# 1. The embeddings and the LM head are not pruned. What share of the model stays dense, and why do the papers
#    leave it so?
# 2. Perplexity depends on the window length $L$. Would you expect it to go up or down with longer windows?
#
# **What to try next.** Set `seqlen=256` (the benchmark's windows) and compare the dense perplexity; set
# `eval_data="news"`; then open notebook 01 for the derivation of the score, or 03 to prune.


# %%
notebook.answers([
    f"{1 - summary['prunable_parameters'] / summary['parameters']:.0%} of `{model}` "
    "stays dense: the embeddings (here tied to the LM head) and the norms. Every token's "
    "input and output passes through them, so an error there reaches every position, and "
    "they are a small share of a 7B model; the papers prune the block linears.",
    "Down, usually: a longer window gives each prediction more context, so the mean "
    "next-token loss falls. The same model has different dense perplexities at different "
    "$L$ — compare this one with `seqlen=256`."])

# %%
notebook.finish(out, "00_setup_and_data",
                {"model": model, "eval_data": eval_data, "seqlen": seqlen,
                 "eval_windows": eval_windows, "seed": seed},
                {"corpus": corpus, "model_summary": summary, "dense_ppl": ppl,
                 "eval": win.describe()},
                [fig_corpus])
