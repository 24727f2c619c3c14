"""D²Prune (paper-spec §2.3): D²-SparseGPT on every linear except the frozen attention
projection(s), which take the D²-Wanda path with no weight update.

The D² term r1 * y_i |W_ij| x_j - r2 * W_ij^2 x_j^2 is added to the OBS saliency (update
path) or to W^2 nu (frozen path). y_i and x_j are the authors' accumulated, s-scaled
activation norms of the linear's own output and input."""
from __future__ import annotations

import torch

from .sparsegpt import prune_obs
from .wanda import d2_wanda_score, prune_rows

FROZEN_CHOICES = ("q", "k", "v", "none", "all")


def d2_term(cols: torch.Tensor, y_hat: torch.Tensor, x_hat_cols: torch.Tensor, r1: float, r2: float) -> torch.Tensor:
    out = torch.zeros_like(cols)
    if r1:
        out += r1 * y_hat[:, None] * cols.abs() * x_hat_cols[None, :]
    if r2:
        out -= r2 * cols.pow(2) * x_hat_cols.pow(2)[None, :]
    return out


def prune_d2_update(weight, stats, sparsity, nm, r1, r2, s, d2_norm, blocksize, percdamp):
    """D²-SparseGPT: OBS update, D²-augmented mask score re-evaluated on the current weights."""
    extra = None
    if r1 or r2:
        y_hat, x_hat = stats.d2_stats(s, "update", d2_norm)
        extra = lambda cols, i1, i2: d2_term(cols, y_hat, x_hat[i1:i2], r1, r2)  # noqa: E731
    return prune_obs(weight, stats.hessian(), sparsity, nm, blocksize, percdamp, extra)


def prune_d2_frozen(weight, stats, sparsity, nm, r1, r2, s, d2_norm):
    """D²-Wanda: per-row selection by W^2 nu + D² term, no update."""
    y_hat, x_hat = stats.d2_stats(s, "frozen", d2_norm)
    score = d2_wanda_score(weight, stats.nu(), y_hat, x_hat, r1, r2)
    return prune_rows(weight, score, sparsity, nm)


def frozen_roles(frozen: str) -> set[str]:
    """'k' -> {'k'}; 'none' -> {}; 'all' -> {'q','k','v'}."""
    if frozen not in FROZEN_CHOICES:
        raise ValueError(f"frozen must be one of {', '.join(FROZEN_CHOICES)}, got '{frozen}'")
    return {"none": set(), "all": {"q", "k", "v"}}.get(frozen, {frozen})
