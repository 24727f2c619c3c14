"""OWL: Outlier Weighed Layerwise sparsity (Yin et al., ICML 2024).

Blocks whose Wanda scores hold more outliers matter more, so they are pruned less. A dense
pre-pass measures each block's outlier ratio D = share of scores |W_ij| * ||X_j|| above M times
the block's mean score (OWL's `check_outlier_mean` on all linears of the block concatenated);
then the ratios map linearly to per-block sparsities in [target - lambda, target + lambda]
whose (parameter-weighted) mean is exactly the target."""
from __future__ import annotations

import dataclasses

import torch

from ..calibration import attach_stats, run_block
from .wanda import wanda_score


def block_sparsities(ratios, target: float, lam: float, weights=None) -> list[float]:
    """Per-block sparsity from outlier ratios: more outliers -> lower sparsity.

    OWL's code: min-max the ratios onto [0, 2*lambda] (a density offset), centre them on their
    mean and set sparsity = target - offset. That can leave [target - lambda, target + lambda]
    when the ratios are skewed (up to 2*lambda), which the paper's constraint forbids; then the
    centred offsets are shrunk about 0 until the extreme one is lambda. The map stays affine and
    increasing in the ratio, and the weighted mean (weights: parameters per block; default equal)
    stays exactly the target. Equal ratios give the uniform target."""
    r = torch.as_tensor(list(ratios), dtype=torch.float64)
    n = r.numel()
    if n == 0:
        return []
    w = torch.ones(n, dtype=torch.float64) if weights is None else torch.as_tensor(list(weights), dtype=torch.float64)
    w = w / w.sum()
    spread = float(r.max() - r.min())
    if spread <= 0 or lam == 0:
        return [float(target)] * n
    offset = (r - r.min()) / spread * 2 * lam          # OWL: [0, 2 lambda]
    offset = offset - (w * offset).sum()              # (weighted) mean 0
    extreme = float(offset.abs().max())
    if extreme > lam:
        offset = offset * (lam / extreme)
    return [float(target - o) for o in offset]


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Share of the scores (all linears of a block together) above m times their mean (OWL's D)."""
    flat = torch.cat([s.flatten() for s in scores])
    return float((flat > m * flat.mean()).sum()) / flat.numel()


@torch.no_grad()
def owl_block_sparsities(blocks, adapter, inputs, device, cfg) -> list[float]:
    """OWL's dense pre-pass over all blocks, then `block_sparsities` (target cfg.sparsity, ±cfg.owl_lambda).

    Works on a copy of `inputs` (its hidden states cloned); each block visits `device` and goes
    back to where it was. Nothing is pruned."""
    x = dataclasses.replace(inputs, hidden=inputs.hidden.clone())
    ratios, sizes = [], []
    for block in blocks:
        home = next(block.parameters()).device
        block.to(device)
        linears = adapter.linears(block)
        stats, handles = attach_stats(linears, set(), set(), device)
        try:
            out = run_block(block, x, None, device)
        finally:
            for h in handles:
                h.remove()
        scores = [wanda_score(lin.weight.detach().float(), stats[name].nu()) for name, lin in linears.items()]
        ratios.append(outlier_ratio(scores, cfg.owl_m))
        sizes.append(sum(lin.weight.numel() for lin in linears.values()))
        del stats, scores
        block.to(home)
        x.hidden = out
    return block_sparsities(ratios, cfg.sparsity, cfg.owl_lambda, sizes)
