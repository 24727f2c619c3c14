"""RIA: Relative Importance and Activations (Zhang et al., ICLR 2024), no weight update.

A weight matters relative to the other weights of its row *and* of its column, scaled by the
input's activation norm to a power a:

    score_ij = (|W_ij| / sum_k |W_ik| + |W_ij| / sum_k |W_kj|) * (||X_j||)^a,   ||X_j|| = sqrt(nu_j).

Selection is per row (or per N:M group) as in Wanda (`wanda.prune_rows`).

With an N:M pattern RIA can first reorder the input channels ("channel permutation", the
authors' heuristic channel reallocation) so that the strong channels are spread evenly over
the M-groups, then pick N:M on the permuted score. CAVEAT: the resulting mask is N:M in the
*permuted* column order, not in the original one. The weight returned here keeps the original
column order (so the model computes the same function); to run it on an N:M kernel one must
store W[:, perm] and apply the same permutation to this layer's inputs (i.e. to the previous
layer's output channels). The engine checks N:M validity in the original order, so it reports
such layers as not N:M-valid: that is honest, the permutation is not applied to the model."""
from __future__ import annotations

import torch

from ..masks import lowest_n_of_m
from .wanda import prune_rows


def ria_score(weight: torch.Tensor, nu: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """Relative importance (row share + column share of |W|) times sqrt(nu_j)^a."""
    w = weight.abs()
    tiny = torch.finfo(w.dtype).tiny                        # an all-zero row/column scores 0, not NaN
    row_sum = w.sum(dim=1, keepdim=True).clamp_min(tiny)   # sum_k |W_ik|
    col_sum = w.sum(dim=0, keepdim=True).clamp_min(tiny)   # sum_k |W_kj|
    return (w / row_sum + w / col_sum) * nu.sqrt()[None, :].pow(a)


def ria_permutation(score: torch.Tensor, m: int) -> torch.Tensor:
    """Column order `perm` (permuted column c is original column perm[c]) that spreads strong channels.

    RIA's heuristic reallocation: rank the channels by their summed score, cut the ranking into M
    equal slices, and give slot s of every M-group one channel of slice s, walking the slices
    alternately forwards and backwards (a snake), so every group gets a similar mix of weak and
    strong channels and the N:M choice inside a group discards less score."""
    cols = score.shape[1]
    if cols % m:
        raise ValueError(f"channel permutation needs the input width ({cols}) to be a multiple of M={m}")
    order = torch.argsort(score.sum(dim=0), stable=True)     # weakest channel first
    groups = cols // m
    perm = torch.empty_like(order)
    for s in range(m):
        part = order[s * groups:(s + 1) * groups]
        perm[s::m] = part if s % 2 == 0 else part.flip(0)
    return perm


def prune_ria(weight: torch.Tensor, nu: torch.Tensor, sparsity: float | None, nm: tuple[int, int] | None,
              a: float = 0.5, permute: bool = False) -> torch.Tensor:
    """New weight (original column order), RIA's lowest scores zeroed per row or per N:M group.

    permute=True (N:M only): the mask is N:M-valid in the order `ria_permutation(ria_score(...), M)`,
    not in the original order (see the module docstring)."""
    score = ria_score(weight, nu, a)
    if not (permute and nm):
        return prune_rows(weight, score, sparsity, nm)
    perm = ria_permutation(score, nm[1])
    mask = torch.empty_like(score, dtype=torch.bool)
    mask[:, perm] = lowest_n_of_m(score[:, perm], *nm)     # un-permute the mask
    return weight.masked_fill(mask, 0)
