"""Row-wise pruning without weight update: Wanda's score, and the per-row (or per-N:M-group) selection
that Wanda, RIA and D²Prune's frozen path (D²-Wanda, in d2prune.py) share."""
from __future__ import annotations

import torch

from ..masks import lowest_n_of_m, lowest_per_row


def wanda_score(weight: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||, with nu_j the mean squared input norm."""
    return weight.abs() * nu.sqrt()[None, :]


def prune_rows(weight: torch.Tensor, score: torch.Tensor, sparsity: float | None,
               nm: tuple[int, int] | None) -> torch.Tensor:
    """Zero the lowest-scoring weights of each row (or of each N:M group); no update."""
    mask = lowest_n_of_m(score, *nm) if nm else lowest_per_row(score, sparsity)
    return weight.masked_fill(mask, 0)
