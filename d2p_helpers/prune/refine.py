"""Mask refinement after selection: move pruned positions around, the zero count of every row fixed.

Two ways, both training-free and per row:

* `dsnot`: DSnoT (Zhang et al., ICLR 2024, "Dynamic Sparse No Training"). It tracks only the
  expected output shift e_i = sum_j (W_ij - W'_ij) E[x_j] and, cycle after cycle, regrows the
  pruned weight that cancels e_i best (relative to the input's variance) and prunes a kept
  weight whose removal also moves e_i towards 0 and that is least important by Wanda's |W| ||x||.
* `swap`: greedy 1-swaps on the exact layer-wise error ||(W - W') X||^2 = d G d^T, G = sum X X^T.

Neither stage may make a row's error d G d^T worse than its input: swap only applies strictly
improving swaps; DSnoT's heuristic ignores the covariance of the inputs and can, so a row whose
error rose after DSnoT is reverted to its input (when no Gram matrix was collected this guard is
skipped). A regrown weight gets back its original value; a pruned one becomes an exact zero."""
from __future__ import annotations

import torch

DSNOT_THRESHOLD = 0.1     # DSnoT's --update_threshold, on its e (a sum over the tokens of a window)
SWAP_CANDIDATES = 8       # swap: best single grows and best single prunes shortlisted per row
SWAP_CANDIDATES_NM = 16   # the same with N:M (pairs stay inside a group, so more are needed)
SWAP_EPOCH = 8            # swap: rounds between exact refreshes of r and of the shortlists


def refine(kind: str, old: torch.Tensor, new: torch.Tensor, stats, nm: tuple[int, int] | None,
           iters: int) -> torch.Tensor:
    """The refined weight: kind 'dsnot' or 'swap' ('none' returns `new`)."""
    if kind == "none" or iters == 0:
        return new
    if kind == "dsnot":
        return dsnot(old, new, stats, nm, iters)
    if kind == "swap":
        return swap(old, new, stats, nm, iters)
    raise ValueError(f"refine must be none, dsnot or swap, got '{kind}'")


def row_errors(old: torch.Tensor, new: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """(w_i - w'_i) G (w_i - w'_i)^T per row, in fp64."""
    d = (old - new).double()
    return ((d @ gram.double()) * d).sum(dim=1)


def keep_better_rows(old: torch.Tensor, new: torch.Tensor, out: torch.Tensor, gram) -> torch.Tensor:
    """`out`, with every row whose error exceeds that of `new` put back to `new`."""
    if gram is None:
        return out
    worse = row_errors(old, out, gram) > row_errors(old, new, gram)
    return torch.where(worse[:, None], new, out)


def _group_columns(p: torch.Tensor, m: int) -> torch.Tensor:
    """[rows, m] column indices of the M-group that holds column p[i]."""
    return (p - p % m)[:, None] + torch.arange(m, device=p.device)[None, :]


@torch.no_grad()
def dsnot(old: torch.Tensor, new: torch.Tensor, stats, nm: tuple[int, int] | None, iters: int,
          incremental: bool = True) -> torch.Tensor:
    """DSnoT's grow-and-prune cycles on the mask of `new` (see the module docstring).

    Per row and cycle, with e the expected output shift and s = sign(e):
      grow  p = argmax over pruned j of  s * W_j E[x_j] / Var[x_j]   (must be > 0: it shrinks e)
      prune k = argmin over kept j with s * W'_j E[x_j] < 0 of |W'_j| ||x_j||   (Wanda's score)
            (N:M: k among the kept weights of p's group, any sign, as DSnoT's N:M code)
    and the pair is applied when |e| > threshold and |e| gets smaller; a row that fails stops.
    Every position flips at most once (grow only initially pruned, prune only initially kept).
    Without N:M the cycles run incrementally (`_dsnot_unstructured`); `incremental=False` runs this general
    loop instead, which the tests hold it equal to."""
    W, cur = old.float(), new.float().clone()
    mu, var = stats.x_mean().float(), stats.x_var().float().clamp_min(1e-12)
    wanda_norm = stats.nu().float().sqrt()
    threshold = DSNOT_THRESHOLD * stats.n / max(1, stats.inp.tokens)   # DSnoT's e sums a window's tokens
    growable = (cur == 0) & (W != 0)
    prunable = cur != 0
    grow_shift = W * mu                               # growing j lowers e by this
    grow_metric = grow_shift / var
    e = ((W - cur) * mu).sum(dim=1)
    active = torch.ones_like(e, dtype=torch.bool)
    inf = torch.tensor(float("inf"))
    if nm is None and incremental:
        return keep_better_rows(old.float(), new.float(), _dsnot_unstructured(
            W, cur, e, active, growable, prunable, grow_shift, grow_metric, mu, wanda_norm, threshold, iters),
            stats.gram)
    for _ in range(iters):
        s = torch.sign(e)[:, None]
        can_grow = growable
        if nm is not None:   # only where the group still has a weight to prune
            can_grow = growable & prunable.reshape(len(e), -1, nm[1]).any(dim=2).repeat_interleave(nm[1], dim=1)
        val = torch.where(can_grow, s * grow_metric, -inf)
        best, p = val.max(dim=1)
        prune_shift = cur * mu                        # pruning j raises e by this
        importance = cur.abs() * wanda_norm
        if nm is None:
            cand = prunable & (s * prune_shift < 0)
            low, k = torch.where(cand, importance, inf).min(dim=1)
        else:
            cols = _group_columns(p, nm[1])
            low, j = torch.where(prunable.gather(1, cols), importance.gather(1, cols), inf).min(dim=1)
            k = cols.gather(1, j[:, None])[:, 0]
        e_after = e - grow_shift.gather(1, p[:, None])[:, 0] + prune_shift.gather(1, k[:, None])[:, 0]
        active &= (best > 0) & torch.isfinite(low) & (e.abs() > threshold) & (e_after.abs() < e.abs())
        if not active.any():
            break
        rows = active.nonzero()[:, 0]
        pr, kr = p[rows], k[rows]
        cur[rows, pr] = W[rows, pr]
        cur[rows, kr] = 0
        growable[rows, pr] = False
        prunable[rows, kr] = False
        e = torch.where(active, e_after, e)
    return keep_better_rows(old.float(), new.float(), cur, stats.gram)


def _dsnot_unstructured(W, cur, e, active, growable, prunable, grow_shift, grow_metric, mu, wanda_norm,
                        threshold, iters):
    """DSnoT's cycles without N:M, with the candidates' scores kept per sign of e and updated only where a
    position flips (each flips at most once), instead of rebuilt every cycle: the same values, hence the
    same choices, as the general loop, in a third of the passes over the weight."""
    inf = float("inf")
    prune_shift = cur * mu
    importance = cur.abs() * wanda_norm
    grow_up = torch.where(growable, grow_metric, -inf)          # e > 0: maximise  W_j E[x_j] / Var[x_j]
    grow_down = torch.where(growable, -grow_metric, -inf)       # e < 0: maximise -W_j E[x_j] / Var[x_j]
    prune_up = torch.where(prunable & (prune_shift < 0), importance, inf)
    prune_down = torch.where(prunable & (prune_shift > 0), importance, inf)
    for _ in range(iters):
        live = active & (e.abs() > threshold)          # the only rows that can still move (e = 0 cannot)
        best, low = torch.zeros_like(e), torch.full_like(e, inf)
        p, k = torch.zeros_like(e, dtype=torch.long), torch.zeros_like(e, dtype=torch.long)
        for rows, grow, prune_ in (((live & (e > 0)).nonzero()[:, 0], grow_up, prune_up),
                                   ((live & (e < 0)).nonzero()[:, 0], grow_down, prune_down)):
            if len(rows):
                best[rows], p[rows] = grow[rows].max(dim=1)
                low[rows], k[rows] = prune_[rows].min(dim=1)
        e_after = e - grow_shift.gather(1, p[:, None])[:, 0] + prune_shift.gather(1, k[:, None])[:, 0]
        active &= (best > 0) & torch.isfinite(low) & (e.abs() > threshold) & (e_after.abs() < e.abs())
        if not active.any():
            break
        rows = active.nonzero()[:, 0]
        pr, kr = p[rows], k[rows]
        cur[rows, pr] = W[rows, pr]
        cur[rows, kr] = 0
        prune_shift[rows, pr], prune_shift[rows, kr] = cur[rows, pr] * mu[pr], 0.0
        grow_up[rows, pr] = grow_down[rows, pr] = -inf
        prune_up[rows, kr] = prune_down[rows, kr] = inf
        e = torch.where(active, e_after, e)
    return cur


def _shortlists(g: torch.Tensor, c: torch.Tensor, nm):
    """Grow positions A [n, nA], prune positions B [n, nB] and the pairs to examine as index maps
    (ia, ib) into them, the same for every row: the K best single grows x the K best single prunes;
    with N:M each shortlisted grow with every column of its M-group, and each shortlisted prune
    with every column of its M-group (so a swap never leaves its group)."""
    K = min(SWAP_CANDIDATES if nm is None else SWAP_CANDIDATES_NM, g.shape[1])
    pi = torch.topk(g, K, dim=1, largest=False, sorted=False)[1]
    ki = torch.topk(c, K, dim=1, largest=False, sorted=False)[1]
    j = torch.arange(K, device=g.device)
    if nm is None:
        return pi, ki, j.repeat_interleave(K), j.repeat(K)
    m = nm[1]
    n, span = g.shape[0], torch.arange(m, device=g.device)
    p_group = ((pi - pi % m)[:, :, None] + span).reshape(n, -1)     # partners of the shortlisted grows
    k_group = ((ki - ki % m)[:, :, None] + span).reshape(n, -1)     # partners of the shortlisted prunes
    A, B = torch.cat([pi, k_group], dim=1), torch.cat([p_group, ki], dim=1)
    jm = torch.arange(K * m, device=g.device)
    ia = torch.cat([j.repeat_interleave(m), K + jm])
    ib = torch.cat([jm, K * m + j.repeat_interleave(m)])
    return A, B, ia, ib


def _take_rows(G: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """G[rows[i], cols[i, :]] as [n, c]."""
    return torch.take(G, rows[:, None] * G.shape[1] + cols)


@torch.no_grad()
def swap(old: torch.Tensor, new: torch.Tensor, stats, nm: tuple[int, int] | None, iters: int) -> torch.Tensor:
    """Greedy 1-swaps (grow one pruned weight back to its original value, prune one kept weight)
    that strictly lower the row's error E = d G d^T, d = w - w', G = stats.gram; up to `iters` rounds.

    With r = d G, a swap changes d_p by a = -w_p and d_k by b = w'_k, so exactly
        dE = (2 a r_p + a^2 G_pp) + (2 b r_k + b^2 G_kk) + 2 a b G_pk.
    For speed (a restriction, not an exhaustive search): every SWAP_EPOCH rounds r is recomputed
    exactly and each row shortlists its K best single grows and K best single prunes (K =
    SWAP_CANDIDATES, or SWAP_CANDIDATES_NM with N:M); the rounds in between examine only pairs
    from those shortlists (all K x K; with N:M each shortlisted weight with the columns of its own
    M-group, so every group keeps its zero count), with exact dE from an incrementally updated r.
    One swap per row and round, applied only if it lowers E by more than fp32 noise; a row whose
    fresh shortlists hold no improving pair is done. The search is fp32; the final per-row guard
    (`keep_better_rows`) is fp64."""
    G = stats.gram.float()
    diag = torch.diagonal(G)
    W, cur = old.float(), new.float().clone()
    growable, prunable = (cur == 0) & (W != 0), cur != 0
    alive = growable.any(dim=1) & prunable.any(dim=1)
    inf = float("inf")
    for step in range(iters):
        fresh = step % SWAP_EPOCH == 0
        if fresh:                       # exact r and new shortlists for the rows still searching
            rows = alive.nonzero()[:, 0]
            if rows.numel() == 0:
                break
            Wr, cr = W[rows], cur[rows]
            r = (Wr - cr) @ G
            err = ((Wr - cr) * r).sum(dim=1)
            g = (Wr * (Wr * diag - 2 * r)).masked_fill_(~growable[rows], inf)   # single grow:  a = -w_p
            c = (cr * (cr * diag + 2 * r)).masked_fill_(~prunable[rows], inf)   # single prune: b = w'_k
            A, B, ia, ib = _shortlists(g, c, nm)
            okA, okB = growable[rows].gather(1, A), prunable[rows].gather(1, B)
            a, b = -Wr.gather(1, A), cr.gather(1, B)    # fixed within the epoch: statuses only switch off
            rA, rB = r.gather(1, A), r.gather(1, B)
            gA0, cB0 = a * a * diag[A], b * b * diag[B]
            cross = 2 * a[:, ia] * b[:, ib] * torch.take(G, A[:, ia] * G.shape[1] + B[:, ib])   # 2 a b G_pk
            del g, c, r, Wr, cr
            searching = torch.ones_like(rows, dtype=torch.bool)
        gA = torch.addcmul(gA0, a, rA, value=2).masked_fill_(~okA, inf)
        cB = torch.addcmul(cB0, b, rB, value=2).masked_fill_(~okB, inf)
        best, j = (gA.index_select(1, ia) + cB.index_select(1, ib) + cross).min(dim=1)
        ok = searching & (best < -1e-5 * err.abs())
        if fresh:
            alive[rows[~ok]] = False    # not even fresh shortlists help: this row is done
        searching &= ok                 # the others idle until the next refresh
        if not ok.any():
            continue
        # apply the chosen swap of every row that has one (coefficient 0 for the others)
        ji, jb = ia[j][:, None], ib[j][:, None]
        p, k = A.gather(1, ji), B.gather(1, jb)
        ap, bk = a.gather(1, ji) * ok[:, None], b.gather(1, jb) * ok[:, None]
        rA += ap * _take_rows(G, p[:, 0], A) + bk * _take_rows(G, k[:, 0], A)
        rB += ap * _take_rows(G, p[:, 0], B) + bk * _take_rows(G, k[:, 0], B)
        okA &= ~(ok[:, None] & (A == p))
        okB &= ~(ok[:, None] & (B == k))
        err += torch.where(ok, best, 0)
        i = ok.nonzero()[:, 0]
        ri, pi, ki = rows[i], p[i, 0], k[i, 0]
        cur[ri, pi] = W[ri, pi]
        cur[ri, ki] = 0
        growable[ri, pi], prunable[ri, pi] = False, True
        growable[ri, ki], prunable[ri, ki] = W[ri, ki] != 0, False
    return keep_better_rows(old.float(), new.float(), cur.to(new.dtype), stats.gram)
