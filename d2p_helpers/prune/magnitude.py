"""Magnitude pruning: |W|, one threshold per layer (N:M: per group). Needs no data."""
from __future__ import annotations

import torch

from ..masks import lowest_n_of_m, lowest_overall


def prune_magnitude(weight: torch.Tensor, sparsity: float | None, nm: tuple[int, int] | None) -> torch.Tensor:
    score = weight.abs()
    mask = lowest_n_of_m(score, *nm) if nm else lowest_overall(score, sparsity)
    return weight.masked_fill(mask, 0)
