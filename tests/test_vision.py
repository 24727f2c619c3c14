"""Vision: tiny random ViT/DeiT/DINOv2 (transformers and timm) and the embedded ViT-S/14 through the same pruner.
timm specifics (fused qkv, save/reload, offline errors) are in test_timm.py."""
import copy
import json
import subprocess
import sys

import pytest
import torch

from d2p_helpers import vision
from d2p_helpers.models import load_model
from d2p_helpers.prune import prune


def test_fashion_mnist_is_real_and_labelled():
    x, y = vision.fashion_mnist("test", 100, seed=0)
    assert x.shape == (100, 28, 28) and x.dtype == torch.uint8 and set(y.tolist()) <= set(range(10))
    assert len(set(y.tolist())) > 5 and x.float().std() > 30


def test_knn_probe_separates_easy_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=g) * 5
    ytr, yte = torch.arange(60) % 3, torch.arange(30) % 3
    ftr, fte = centers[ytr] + torch.randn(60, 16, generator=g), centers[yte] + torch.randn(30, 16, generator=g)
    assert vision.knn_top1(ftr, ytr, fte, yte, k=5) > 0.9


# one transformers and one timm family in the fast tier, the other three in the slow one
@pytest.mark.parametrize("name", ["tiny-vit", "tiny-timm-vit"] + [pytest.param(n, marks=pytest.mark.slow)
                                                                  for n in ("tiny-deit", "tiny-dinov2", "tiny-timm-deit")])
def test_tiny_vits_prune_with_every_pattern(name):
    model, tok = load_model(name)
    assert tok is None
    samples = vision.calibration_samples("fashion-mnist", 2, 0, model)
    rep = prune(model, "d2prune", pattern="2:4", samples=samples, progress=False)
    assert all(r["nm_valid"] for r in rep.per_linear) and rep.frozen_per_block == ["v", "v"]
    head = getattr(model, "classifier", None) or getattr(model, "head", None)
    if head is not None:
        assert float((head.weight == 0).float().mean()) < 0.01     # the classifier head is never pruned


@pytest.mark.slow
def test_cli_vision_record(tmp_path):
    out = tmp_path / "v.json"
    res = subprocess.run([sys.executable, "-m", "d2p_helpers.cli", "prune", "--model", "tiny-dinov2", "--method", "d2prune",
                          "--sparsity", "0.5", "--calib", "fashion-mnist", "--eval", "fashion-mnist", "--nsamples", "2",
                          "--vision-train", "40", "--vision-test", "20", "--out", str(out), "--no-progress"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    v = json.loads(out.read_text())["vision"]
    assert {"knn_top1_pruned", "knn_top1_dense", "cls_cosine", "attention_kl"} <= set(v)
    assert 0 < v["cls_cosine"] <= 1 and v["attention_kl"] >= 0


@pytest.mark.slow
def test_embedded_vit_is_real_and_pruning_moves_it():
    model, _ = load_model("vit-s14-focus")
    from d2p_helpers.models import is_timm
    assert is_timm(model)                     # the default representation is timm's
    dense = copy.deepcopy(model)
    assert sum(p.numel() for p in model.parameters()) > 21_000_000
    prune(model, "d2prune", sparsity=0.5, samples=vision.calibration_samples("fashion-mnist", 4, 0), progress=False)
    r = vision.evaluate(model, dense, "fashion-mnist", train_n=300, test_n=100, attention_images=1)
    assert r["knn_top1_dense"] > 0.3          # real features: well above the 10% of chance
    assert 0.5 < r["cls_cosine"] < 0.9999 and r["attention_kl"] > 0
