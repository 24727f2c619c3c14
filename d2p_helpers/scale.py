"""Memory arithmetic for pruning big models block by block (no weights needed: shapes only)."""
from __future__ import annotations

# Public architecture shapes (hidden, intermediate, layers, heads, kv heads, vocab, context)
ARCHS = {
    "LLaMA-2-7B": (4096, 11008, 32, 32, 32, 32000, 4096),
    "LLaMA-2-13B": (5120, 13824, 40, 40, 40, 32000, 4096),
    "LLaMA-2-70B": (8192, 28672, 80, 64, 8, 32000, 4096),
    "LLaMA-3-8B": (4096, 14336, 32, 32, 8, 128256, 8192),
    "Qwen3-8B": (4096, 12288, 36, 32, 8, 151936, 2048),
}


def block_linears(hidden: int, inter: int, heads: int, kv_heads: int) -> dict[str, tuple[int, int]]:
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    return {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, hidden),
            "gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter)}


def memory_plan(name: str, nsamples: int = 128, seqlen: int | None = None, weight_bytes: int = 2) -> dict:
    """GiB needed on the compute device when only one block is there (the engine's layout)."""
    hidden, inter, layers, heads, kv_heads, vocab, ctx = ARCHS[name]
    seqlen = seqlen or ctx
    lin = block_linears(hidden, inter, heads, kv_heads)
    block_params = sum(o * i for o, i in lin.values())
    gib = 2 ** 30
    total_params = layers * block_params + 2 * vocab * hidden
    acts = nsamples * seqlen * hidden * weight_bytes
    largest_in = max(i for _, i in lin.values())
    plan = {"model": name, "nsamples": nsamples, "seqlen": seqlen, "total_weights_gib": total_params * weight_bytes / gib,
            "block_weights_gib": block_params * weight_bytes / gib,
            "calibration_activations_gib": 2 * acts / gib,     # block inputs and outputs
            "largest_gram_gib": largest_in ** 2 * 4 / gib,     # fp32 statistics
            "attention_scores_gib": heads * seqlen ** 2 * 4 / gib}   # one sample, eager attention would need this
    plan["device_peak_estimate_gib"] = (plan["block_weights_gib"] + plan["calibration_activations_gib"]
                                        + 3 * plan["largest_gram_gib"])   # Gram, its inverse, its Cholesky
    return plan
