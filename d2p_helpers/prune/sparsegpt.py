"""SparseGPT: OBS mask selection and weight update, 128-column blocks, 1% damping.

`extra_score` lets D²-SparseGPT add its activation terms to the OBS saliency; the update
itself is the same closed form (paper Eq. 10), so D²-SparseGPT with r1 = r2 = 0 is SparseGPT."""
from __future__ import annotations

from typing import Callable

import torch

from ..masks import lowest_n_of_m, lowest_overall

ExtraScore = Callable[[torch.Tensor, int, int], torch.Tensor]  # (current W columns, i1, i2) -> add-on


class HessianError(RuntimeError):
    pass


def inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of H^-1 (after damping), and the damping actually used.

    If H + damp*I is not positive definite in fp32 the damping is raised tenfold (up to 3
    times) and the value used is reported, never silently."""
    damp = percdamp * torch.mean(torch.diag(hessian))
    eye = torch.eye(hessian.shape[0], device=hessian.device)
    for attempt in range(4):
        try:
            chol = torch.linalg.cholesky(hessian + damp * eye)
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True), float(damp / torch.mean(torch.diag(hessian)))
        except torch.linalg.LinAlgError:
            damp = damp * 10
    raise HessianError("Hessian is not positive definite even with 10x1000 damping")


def prune_obs(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float | None, nm: tuple[int, int] | None,
              blocksize: int = 128, percdamp: float = 0.01, extra_score: ExtraScore | None = None
              ) -> tuple[torch.Tensor, dict]:
    """Prune `weight` [d_out, d_in] (fp32) given H = (2/N) sum X X^T; returns the new weight and info."""
    if nm is not None and blocksize % nm[1]:
        blocksize = max(nm[1], blocksize // nm[1] * nm[1])   # an N:M group never straddles two blocks
    W = weight.clone()
    H = hessian.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    U, damp_used = inverse_cholesky(H, percdamp)
    rows, cols = W.shape
    n, m = nm or (0, 0)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        if nm is None:
            score = W1.pow(2) / d.pow(2)[None, :]
            if extra_score is not None:
                score = score + extra_score(W1, i1, i2)
            pruned = lowest_overall(score, sparsity)
        else:
            pruned = torch.zeros_like(W1, dtype=torch.bool)
        # The column loop runs on the transposed block: row i of W1T is column i, so the rank-1
        # updates of the later columns touch contiguous memory (about 2x faster on a CPU).
        W1T, prunedT = W1.t().contiguous(), pruned.t().contiguous()
        prunedT_f = prunedT.to(W1.dtype)
        Err1T = torch.zeros_like(W1T)
        for i in range(i2 - i1):
            if nm is not None and i % m == 0:
                group = W1T[i:i + m].t()
                score = group.pow(2) / d[i:i + m].pow(2)[None, :]
                if extra_score is not None:
                    score = score + extra_score(group, i1 + i, i1 + i + m)
                prunedT[i:i + m] = lowest_n_of_m(score, n, m).t()
                prunedT_f[i:i + m] = prunedT[i:i + m].to(W1.dtype)
            # OBS step for column i: remove the pruned entries, spread their error over later columns.
            err = W1T[i] * prunedT_f[i] / U1[i, i]
            W1T[i:].addr_(U1[i, i:], err, alpha=-1)
            Err1T[i] = err
        W1, pruned, Err1 = W1T.t(), prunedT.t(), Err1T.t()
        W[:, i1:i2] = W1.masked_fill(pruned, 0)   # exact zeros (w - (w/d)*d may leave rounding)
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W, {"damping": damp_used}
