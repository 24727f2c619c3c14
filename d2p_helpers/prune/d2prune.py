"""D²Prune (paper-spec §2.3): D²-SparseGPT on every linear except the frozen attention
projection(s), which take the D²-Wanda path with no weight update. Notebook 01 derives the score,
notebook 03 computes it by hand on a 4 × 8 example.

The whole score, both paths:

    update path (D²-SparseGPT):  S_ij = W_ij² / U_jj²  + r1·ŷ_i·|W_ij|·x̂_j − r2·W_ij²·x̂_j²
    frozen path (D²-Wanda):      S_ij = W_ij² · ν_j    + r1·ŷ_i·|W_ij|·x̂_j − r2·W_ij²·x̂_j²

with U the upper Cholesky factor of H⁻¹ (H = (2/N) Σ_k X_k X_kᵀ), ν_j = (1/N) Σ_k ‖x_j^(k)‖², and the
activation norms ŷ_i (the linear's own output channel i) and x̂_j (its input channel j), per `d2_norms`:

    authors (released code):  ŷ_i = Σ_k k·‖y_i^(k)‖ / (N·s)
                              x̂_j = Σ_k √(2k)·‖x_j^(k)‖ / (N·s)   (update path: SparseGPT's √(2/k)-scaled input)
                              x̂_j = Σ_k k·‖x_j^(k)‖ / (N·s)       (frozen path)
    mean (N- and L-free):     the per-sample means of the same norms times the authors' weights at N = 128,
                              so the term keeps the size it has at the paper's N whatever N is.

The running sums are accumulated by `calibration.InputAcc` / `LinearStats` (one pass, any N)."""
from __future__ import annotations

import math

import torch

from .config import FROZEN_CHOICES, D2Terms
from .sparsegpt import prune_obs
from .wanda import prune_rows

MEAN_NORM_REFERENCE_N = 128   # the paper's N: the `mean` normalisation matches the authors' strength there


def d2_norms(stats, s: float, path: str, norm: str = "authors") -> tuple[torch.Tensor, torch.Tensor]:
    """(ŷ, x̂) of one linear from its running sums (formula in the module docstring). `path`: update | frozen."""
    n, inp = stats.n, stats.inp
    if norm == "authors":
        x = (inp.x_sqrt2k if path == "update" else inp.x_k) / (n * s)
        return stats.y_k / (n * s), x
    if norm == "mean":
        ref = MEAN_NORM_REFERENCE_N
        y_scale = (ref + 1) / 2 / s                            # mean of k over k = 1..ref
        x_scale = (sum(math.sqrt(2 * k) for k in range(1, ref + 1)) / ref if path == "update" else (ref + 1) / 2) / s
        return stats.y_sum / n * y_scale, inp.x_sum / n * x_scale
    raise ValueError(f"d2_norm must be 'authors' or 'mean', got '{norm}'")


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
