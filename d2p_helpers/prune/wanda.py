"""Row-wise pruning without weight update: Wanda, and the frozen path of D²Prune (D²-Wanda).

Wanda scores |W_ij| * ||X_j||; D²-Wanda scores W_ij^2 nu_j + r1 y_i |W_ij| x_j - r2 W_ij^2 x_j^2.
With r1 = r2 = 0 the two rank every row identically (one is the square of the other)."""
from __future__ import annotations

import torch

from ..masks import lowest_n_of_m, lowest_per_row


def wanda_score(weight: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    return weight.abs() * nu.sqrt()[None, :]


def d2_wanda_score(weight: torch.Tensor, nu: torch.Tensor, y_hat: torch.Tensor, x_hat: torch.Tensor,
                   r1: float, r2: float) -> torch.Tensor:
    w2 = weight.pow(2)
    score = w2 * nu[None, :]
    if r1:
        score = score + r1 * y_hat[:, None] * weight.abs() * x_hat[None, :]
    if r2:
        score = score - r2 * w2 * x_hat.pow(2)[None, :]
    return score


def prune_rows(weight: torch.Tensor, score: torch.Tensor, sparsity: float | None,
               nm: tuple[int, int] | None) -> torch.Tensor:
    """Zero the lowest-scoring weights of each row (or of each N:M group); no update."""
    mask = lowest_n_of_m(score, *nm) if nm else lowest_per_row(score, sparsity)
    return weight.masked_fill(mask, 0)
