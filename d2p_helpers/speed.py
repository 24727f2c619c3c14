"""2:4 semi-structured sparsity: check the layout, convert linears, time dense vs sparse GEMMs.

PyTorch's 2:4 kernels (CUTLASS / cuSPARSELt) exist only for CUDA GPUs (Ampere or newer) in fp16/bf16;
on a CPU `to_sparse_semi_structured` raises, so here we validate the layout and skip the timing."""
from __future__ import annotations

import torch

from .masks import is_valid_n_of_m
from .models import get_adapter

# LLaMA-2-7B linear shapes (out, in), paper Table 16
LLAMA7B_SHAPES = {"q/k/v/o_proj": (4096, 4096), "up/gate_proj": (11008, 4096), "down_proj": (4096, 11008)}
NO_CPU_KERNEL = ("no 2:4 sparse kernel on CPU: torch.sparse.to_sparse_semi_structured supports CUDA tensors only "
                 "(CUTLASS/cuSPARSELt, fp16/bf16, compute capability 8.0+); timings skipped")


def check_24_layout(model) -> dict:
    """Every block linear is 2:4-valid and its shape meets the kernels' minimum multiples (fp16: 32 x 64)."""
    adapter = get_adapter(model)
    rows = []
    for b, block in enumerate(adapter.blocks(model)):
        for name, lin in adapter.linears(block).items():
            w = lin.weight.detach()
            rows.append({"block": b, "name": name, "valid_2_4": is_valid_n_of_m(w.float(), 2, 4),
                         "kernel_shape_ok": w.shape[0] % 32 == 0 and w.shape[1] % 64 == 0})
    return {"linears": len(rows), "all_valid": all(r["valid_2_4"] for r in rows),
            "all_kernel_shapes": all(r["kernel_shape_ok"] for r in rows), "per_linear": rows}


def cpu_roundtrip_24(weight: torch.Tensor) -> bool:
    """Compress a 2:4 weight with PyTorch's CUTLASS packing (private helpers that run on CPU) and back."""
    try:
        from torch.sparse._semi_structured_conversions import (sparse_semi_structured_from_dense_cutlass,
                                                               sparse_semi_structured_to_dense_cutlass)
    except ImportError:
        return False
    w = weight.detach().to(torch.float16).contiguous()
    packed, meta = sparse_semi_structured_from_dense_cutlass(w)
    return bool(torch.equal(sparse_semi_structured_to_dense_cutlass(packed, meta), w))


def to_semi_structured(model) -> int:
    """Replace every 2:4-valid block linear weight with a SparseSemiStructuredTensor (CUDA only)."""
    from torch.sparse import to_sparse_semi_structured
    adapter = get_adapter(model)
    n = 0
    for block in adapter.blocks(model):
        for lin in adapter.linears(block).values():
            if lin.weight.device.type != "cuda":
                raise RuntimeError(NO_CPU_KERNEL)
            if is_valid_n_of_m(lin.weight.float(), 2, 4):
                lin.weight = torch.nn.Parameter(to_sparse_semi_structured(lin.weight.detach()), requires_grad=False)
                n += 1
    return n


def time_gemms(tokens: int = 2048, dtype=torch.float16, shapes: dict | None = None, device: str = "cuda") -> dict:
    """Dense vs 2:4 GEMM latency (ms) for `tokens` x in -> out, per shape, with torch.utils.benchmark."""
    if device != "cuda" or not torch.cuda.is_available():
        return {"skipped": NO_CPU_KERNEL}
    from torch.sparse import to_sparse_semi_structured
    from torch.utils.benchmark import Timer
    out = {}
    for label, (o, i) in (shapes or LLAMA7B_SHAPES).items():
        w = torch.randn(o, i, dtype=dtype, device=device)
        mask = torch.tensor([0, 0, 1, 1], dtype=torch.bool, device=device).tile(o, i // 4)
        w = w.masked_fill(mask, 0)
        x = torch.randn(tokens, i, dtype=dtype, device=device)
        ws = to_sparse_semi_structured(w)
        dense = Timer("torch.nn.functional.linear(x, w)", globals={"x": x, "w": w, "torch": torch}).blocked_autorange(min_run_time=1).median
        sparse = Timer("torch.nn.functional.linear(x, ws)", globals={"x": x, "ws": ws, "torch": torch}).blocked_autorange(min_run_time=1).median
        out[label] = {"shape": [o, i], "tokens": tokens, "dense_ms": dense * 1e3, "sparse_ms": sparse * 1e3,
                      "speedup": dense / sparse}
    out["device"] = torch.cuda.get_device_name()
    return out
