"""Attention diagnostics: KL(pruned || dense) of attention distributions, attention-output
RMSE, long-tail statistics (peak, entropy) and output-logit KL. Needs eager attention.

timm's Attention returns no weights; with its fused (SDPA) path switched off it computes
softmax(q k^T * scale) and passes it through `attn_drop` (identity in eval), where a hook reads it."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .models import get_adapter

EPS = 1e-12


@contextmanager
def eager_attention(model):
    """sdpa cannot return attention weights; switch to eager for the duration."""
    from .models import is_timm
    if is_timm(model):
        mods = [m for m in model.modules() if hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]
        saved = [m.fused_attn for m in mods]
        for m in mods:
            m.fused_attn = False
        try:
            yield model
        finally:
            for m, f in zip(mods, saved):
                m.fused_attn = f
        return
    previous = getattr(model.config, "_attn_implementation", None)
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if previous not in (None, "eager"):
            model.set_attn_implementation(previous)


def causal_mask(length: int, dtype, device) -> torch.Tensor:
    """Additive [1, 1, T, T] mask (eager attention adds it to the scores)."""
    mask = torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)
    return mask[None, None]


def attention_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per query row, [..., T]; masked (zero) entries contribute nothing."""
    p, q = p.float(), q.float()
    return (p * (torch.log(p + EPS) - torch.log(q + EPS))).sum(-1).clamp_min(0)


def long_tail(p: torch.Tensor) -> tuple[float, float]:
    """(mean peak probability, mean row entropy in nats) of attention rows."""
    p = p.float()
    return float(p.max(-1).values.mean()), float(-(p * torch.log(p + EPS)).sum(-1).mean())


@contextmanager
def capture_attention_modules(modules: list):
    """Record (output, weights) of each attention module for the next forward."""
    store, probs = [None] * len(modules), [None] * len(modules)

    def make(i):
        def hook(_m, _args, out):
            if isinstance(out, torch.Tensor):      # timm: the output alone; weights from the attn_drop hook
                store[i], probs[i] = (out.detach(), probs[i]), None
                return
            store[i] = (out[0].detach(), out[1].detach() if isinstance(out, tuple) and len(out) > 1
                        and out[1] is not None else None)
        return hook

    def make_probs(i):
        def hook(_m, args, _out):
            probs[i] = args[0].detach()
        return hook
    handles = [m.register_forward_hook(make(i)) for i, m in enumerate(modules)]
    handles += [m.attn_drop.register_forward_hook(make_probs(i)) for i, m in enumerate(modules)
                if hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def attention_modules(model) -> list:
    adapter = get_adapter(model)
    blocks = adapter.blocks(model)
    return [b.get_submodule(adapter.attention_path(b)) for b in blocks]


@torch.no_grad()
def compare_attention(pruned, dense, windows, progress: bool = True) -> dict:
    """Per-layer attention KL / RMSE / long tail of `pruned` against `dense`.

    `windows`: token windows [n, T] (language models) or a list of model-input dicts (e.g. pixel_values)."""
    per_block, logit_kl, n = None, 0.0, 0
    device = next(dense.parameters()).device
    with eager_attention(pruned), eager_attention(dense):
        mods_p, mods_d = attention_modules(pruned), attention_modules(dense)
        for w in tqdm(windows, desc="attention", disable=not progress, leave=False):
            batch = {k: v.to(device) for k, v in w.items()} if isinstance(w, dict) else {"input_ids": w[None].to(device)}
            extra = {"use_cache": False} if "input_ids" in batch else {}
            with capture_attention_modules(mods_d) as sd:
                od = dense(**batch, **extra)
            with capture_attention_modules(mods_p) as sp:
                op = pruned(**batch, **extra)
            if "input_ids" in batch:
                logit_kl += float(attention_kl(F.softmax(op.logits.float(), -1), F.softmax(od.logits.float(), -1)).mean())
            rows = layer_rows(sp, sd)
            per_block = rows if per_block is None else [{k: a[k] + b[k] for k in a} for a, b in zip(per_block, rows)]
            n += 1
    per_block = [{"block": i, **{k: v / n for k, v in r.items()}} for i, r in enumerate(per_block)]
    for r in per_block:
        r["rmse"] = r.pop("mse") ** 0.5
    return {"per_block": per_block, "mean_kl": sum(r["kl"] for r in per_block) / len(per_block),
            "mean_rmse": sum(r["rmse"] for r in per_block) / len(per_block),
            "logit_kl": logit_kl / n if logit_kl or "input_ids" in batch else None,
            "windows": n, "kl_definition": "KL(pruned || dense), mean over heads and query positions"}


def layer_rows(pruned_store, dense_store) -> list[dict]:
    rows = []
    for (op, wp), (od, wd) in zip(pruned_store, dense_store):
        row = {"mse": float((op.float() - od.float()).pow(2).mean()),
               "rel_error": float((op.float() - od.float()).pow(2).sum() / od.float().pow(2).sum().clamp_min(EPS))}
        if wp is not None and wd is not None:
            row["kl"] = float(attention_kl(wp, wd).mean())
            row["peak_pruned"], row["entropy_pruned"] = long_tail(wp)
            row["peak_dense"], row["entropy_dense"] = long_tail(wd)
        rows.append(row)
    return rows


@torch.no_grad()
def head_averaged_map(model, inputs: dict, layer: int = -1) -> torch.Tensor:
    """Attention probabilities of one layer for one input, averaged over heads: [T, T]."""
    with eager_attention(model), capture_attention_modules(attention_modules(model)[layer:][:1]) as store:
        model(**inputs, **({"use_cache": False} if "input_ids" in inputs else {}))
    return store[0][1][0].float().mean(0)
