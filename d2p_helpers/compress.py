"""A compact on-disk format for 2:4-sparse models: kept values + 2-bit positions, reloadable anywhere.

Per group of 4 inputs a row keeps 2 values; we store those values ([out, in/2], the model's dtype) and
their positions (2 bits each, 2 groups per byte: [out, in/8] uint8). fp16 weights shrink from 16 to 9 bits
per weight. Loading rebuilds dense weights, so it works on any device; GPU users can then call
`d2p_helpers.speed.to_semi_structured` for the sparse kernels."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .masks import is_valid_n_of_m
from .models import get_adapter
from .record import replace_dir

FORMAT = "d2p-2:4-v1"


def pack_2_4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [out, in/2], packed positions [out, in/8] uint8) of a 2:4-valid weight."""
    rows, cols = weight.shape
    if cols % 8 or not is_valid_n_of_m(weight.float(), 2, 4):
        raise ValueError("pack_2_4 needs a 2:4-valid weight whose input width is a multiple of 8")
    groups = weight.reshape(rows, cols // 4, 4)
    # positions of the two kept entries per group (zeros that happen to be kept are fine: any 2 of the 4)
    keep = torch.sort((groups != 0).to(torch.int8) * 4 + torch.arange(4, 0, -1, dtype=torch.int8), dim=2,
                      descending=True, stable=True)[1][..., :2].sort(dim=2)[0]
    values = torch.gather(groups, 2, keep).reshape(rows, cols // 2)
    nibble = (keep[..., 0] | (keep[..., 1] << 2)).to(torch.uint8)          # [rows, cols/4]
    packed = nibble[:, 0::2] | (nibble[:, 1::2] << 4)
    return values.contiguous(), packed.contiguous()


def unpack_2_4(values: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    rows, half = values.shape
    nibble = torch.stack([packed & 0xF, packed >> 4], dim=2).reshape(rows, half // 2).long()
    keep = torch.stack([nibble & 0x3, (nibble >> 2) & 0x3], dim=2)              # [rows, groups, 2]
    dense = torch.zeros(rows, half // 2, 4, dtype=values.dtype)
    dense.scatter_(2, keep, values.reshape(rows, half // 2, 2))
    return dense.reshape(rows, half * 2)


def save_compressed(model, tokenizer, out_dir: str | Path) -> dict:
    """Write config, tokenizer and one safetensors file with every 2:4 block linear packed."""
    with replace_dir(out_dir) as tmp:
        return _write_compressed(model, tokenizer, tmp)


def _write_compressed(model, tokenizer, tmp: Path) -> dict:
    from safetensors.torch import save_file
    adapter = get_adapter(model)
    prefix = adapter.blocks_path
    packed_names = []
    tensors = {}
    linear_weights = {f"{prefix}.{b}.{n}.weight": lin.weight for b, blk in enumerate(adapter.blocks(model))
                      for n, lin in adapter.linears(blk).items()}
    for name, tensor in model.state_dict().items():
        w = linear_weights.get(name)
        if w is not None and w.shape[1] % 8 == 0 and is_valid_n_of_m(w.float(), 2, 4):
            tensors[f"{name}.values"], tensors[f"{name}.positions"] = pack_2_4(w.detach().cpu())
            packed_names.append(name)
        else:
            tensors[name] = tensor.detach().cpu().contiguous()
    tied = getattr(model.config, "tie_word_embeddings", False)
    if tied:
        tensors = {k: v for k, v in tensors.items() if "lm_head" not in k}
    save_file(tensors, str(tmp / "model_2_4.safetensors"), metadata={"format": FORMAT})
    model.config.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    info = {"format": FORMAT, "packed": packed_names, "tied_embeddings": bool(tied)}
    (tmp / "d2p_compressed.json").write_text(json.dumps(info, indent=1))
    return info


def load_compressed(path: str | Path, dtype=None):
    """Rebuild the dense model (and tokenizer, when saved) from `save_compressed` output."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    path = Path(path)
    info = json.loads((path / "d2p_compressed.json").read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} folder")
    raw = load_file(str(path / "model_2_4.safetensors"))
    state = {k: v for k, v in raw.items() if not k.endswith((".values", ".positions"))}
    for name in info["packed"]:
        state[name] = unpack_2_4(raw[f"{name}.values"], raw[f"{name}.positions"])
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or next(iter(state.values())).dtype)
    model.load_state_dict(state, strict=not info["tied_embeddings"])
    if info["tied_embeddings"]:
        model.tie_weights()
    tok = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
    return model.eval(), tok
