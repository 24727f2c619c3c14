"""D²Prune (paper-spec §2.3): D²-SparseGPT on every linear except the frozen attention
projection(s), which take the D²-Wanda path with no weight update.

The D² term r1 * y_i |W_ij| x_j - r2 * W_ij^2 x_j^2 is added to the OBS saliency (update
path) or to W^2 nu (frozen path). y_i and x_j are the authors' accumulated, s-scaled
activation norms of the linear's own output and input."""
from __future__ import annotations

import torch

from .config import FROZEN_CHOICES, D2Terms
from .sparsegpt import prune_obs
from .wanda import prune_rows


def d2_term(cols: torch.Tensor, y_hat: torch.Tensor, x_hat_cols: torch.Tensor, r1: float, r2: float) -> torch.Tensor:
    """r1 * y_i |W_ij| x_j - r2 * W_ij^2 x_j^2 for the given columns of W (the code's sign convention for r2)."""
    out = torch.zeros_like(cols)
    if r1:
        out += r1 * y_hat[:, None] * cols.abs() * x_hat_cols[None, :]
    if r2:
        out -= r2 * cols.pow(2) * x_hat_cols.pow(2)[None, :]
    return out


def d2_wanda_score(weight: torch.Tensor, nu: torch.Tensor, y_hat: torch.Tensor, x_hat: torch.Tensor,
                   r1: float, r2: float) -> torch.Tensor:
    """W_ij^2 nu_j + the D² term; with r1 = r2 = 0 it ranks every row as Wanda does (its square)."""
    return weight.pow(2) * nu[None, :] + d2_term(weight, y_hat, x_hat, r1, r2)


def prune_d2_sparsegpt(weight, stats, sparsity, nm, d2: D2Terms, blocksize: int = 128, percdamp: float = 0.01):
    """D²-SparseGPT: OBS update, D²-augmented mask score re-evaluated on the current weights."""
    extra = None
    if d2.active:
        y_hat, x_hat = stats.d2_stats(d2.s, "update", d2.norm)
        extra = lambda cols, i1, i2: d2_term(cols, y_hat, x_hat[i1:i2], d2.r1, d2.r2)  # noqa: E731
    return prune_obs(weight, stats.hessian(), sparsity, nm, blocksize, percdamp, extra)


def prune_d2_wanda(weight, stats, sparsity, nm, d2: D2Terms):
    """D²-Wanda: per-row selection by W^2 nu + D² term, no update."""
    y_hat, x_hat = stats.d2_stats(d2.s, "frozen", d2.norm)
    return prune_rows(weight, d2_wanda_score(weight, stats.nu(), y_hat, x_hat, d2.r1, d2.r2), sparsity, nm)


def frozen_roles(frozen: str) -> set[str]:
    """'k' -> {'k'}; 'none' -> {}; 'all' -> {'q','k','v'}."""
    if frozen not in FROZEN_CHOICES:
        raise ValueError(f"frozen must be one of {', '.join(FROZEN_CHOICES)}, got '{frozen}'")
    return {"none": set(), "all": {"q", "k", "v"}}.get(frozen, {frozen})
