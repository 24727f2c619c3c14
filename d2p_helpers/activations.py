"""Activation magnitudes per layer, for the paper's delta-x = lambda x check (Appendix C, spec §7.1)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def block_inputs(model, ids: torch.Tensor, progress: bool = True) -> list[torch.Tensor]:
    """Residual-stream input of every block for each window: list over layers of [n, T, D] (fp32)."""
    per_block = None
    for w in tqdm(ids, desc="activations", disable=not progress, leave=False):
        hs = model(input_ids=w[None], output_hidden_states=True, use_cache=False).hidden_states[:-1]
        if per_block is None:
            per_block = [[] for _ in hs]
        for i, h in enumerate(hs):
            per_block[i].append(h[0].float())
    return [torch.stack(x) for x in per_block]


def magnitude(x: torch.Tensor, kind: str = "dim_l2_mean") -> torch.Tensor:
    """One number per window [n] from [n, T, D] activations.

    dim_l2_mean: mean over hidden dims of each dim's L2 norm over tokens (Figure 2's per-dim norm, averaged);
    frobenius:   the window's Frobenius norm."""
    if kind == "dim_l2_mean":
        return x.norm(dim=1).mean(dim=1)
    if kind == "frobenius":
        return x.flatten(1).norm(dim=1)
    raise ValueError(f"magnitude kind must be dim_l2_mean or frobenius, got {kind}")


def fit_lambda(x: torch.Tensor, y: torch.Tensor) -> dict:
    """Least-squares y = lambda x through the origin, and y = a x + b, with R^2 of each."""
    x, y = x.double(), y.double()
    lam = float((x * y).sum() / (x * x).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2_origin = 1 - float(((y - lam * x) ** 2).sum()) / ss_tot
    A = torch.stack([x, torch.ones_like(x)], 1)
    (a, b) = torch.linalg.lstsq(A, y[:, None]).solution.flatten().tolist()
    r2 = 1 - float(((y - a * x - b) ** 2).sum()) / ss_tot
    return {"lambda": lam, "r2": r2_origin, "slope": a, "intercept": b, "r2_affine": r2}


def shift_points(acts_a: list[torch.Tensor], acts_b: list[torch.Tensor], kind: str = "dim_l2_mean") -> tuple:
    """Per layer: (mean magnitude of x_A, mean magnitude of x_B - x_A), windows paired by index."""
    xs, ds = [], []
    for a, b in zip(acts_a, acts_b):
        n = min(a.shape[0], b.shape[0])
        xs.append(float(magnitude(a[:n], kind).mean()))
        ds.append(float(magnitude(b[:n] - a[:n], kind).mean()))
    return torch.tensor(xs), torch.tensor(ds)
