"""Loading models, and the architecture adapter: the only code that knows layer names."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .assets import AssetError, smollm2_dir

EMBEDDED_MODELS = ("smollm2-135m",)
EMBEDDED_VISION = ("vit-s14-focus",)
TINY_VISION = ("tiny-vit", "tiny-deit", "tiny-dinov2")
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
    return ", ".join(EMBEDDED_MODELS + EMBEDDED_VISION + TINY_MODELS + TINY_VISION) + ", a local HF folder or a .gguf file"


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
    return getattr(model.config, "model_type", "") in ENCODER_TYPES


def load_tokenizer(name: str = "smollm2-135m"):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(smollm2_dir() if name in EMBEDDED_MODELS + TINY_MODELS else name)


def load_model(name: str, dtype: torch.dtype | str = torch.float32, device: str = "cpu", seed: int = 0):
    """(model, tokenizer) for an embedded name, a tiny random config, a folder, a .gguf or a hub id.

    Tiny models are random (seeded) and share the embedded tokenizer: for fast tests only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    try:
        if name in EMBEDDED_VISION:
            from transformers import Dinov2Model
            from .assets import vit_s14_focus_dir
            tok, model = None, Dinov2Model.from_pretrained(vit_s14_focus_dir(), dtype=dtype)
        elif name in TINY_VISION:
            torch.manual_seed(seed)
            tok, model = None, _tiny_vision(name).to(dtype)
        elif name in EMBEDDED_MODELS:
            path = smollm2_dir()
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
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
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            try:
                tok, model = _from_folder_or_hub(name, dtype, local_only=offline)
            except (OSError, ValueError) as exc:
                why = "the hub is offline here (HF_HUB_OFFLINE=1) and it is not in the local cache" if offline \
                    else f"{type(exc).__name__}"
                raise ModelError(f"could not load model '{name}': {why}; offline choices: {offline_choices()}") from None
    except AssetError as exc:
        raise ModelError(str(exc)) from None
    model.eval().to(device)
    if not is_vision(model):
        model.config.use_cache = False
    model.d2p_source = name
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

    def attention_path(self, block: nn.Module) -> str:
        """Name of the attention module inside a block (parent of q_proj)."""
        return self.qkv_names(block)["q"].rsplit(".", 1)[0]

    def default_frozen(self) -> str:
        """The paper's scripts freeze k for OPT and v for the Llama family; ViTs are not specified: v."""
        return "k" if self.model_type == "opt" else "v"


def get_adapter(model: nn.Module) -> Adapter:
    model_type = getattr(model.config, "model_type", type(model).__name__)
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
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


def projection(model, block: int, role: str) -> nn.Linear:
    """The q/k/v projection of one block, wherever the architecture keeps it."""
    adapter = get_adapter(model)
    b = adapter.blocks(model)[block]
    return b.get_submodule(adapter.qkv_names(b)[role])
