"""Block tuning: a few Adam steps on a pruned block's kept weights toward the dense model's block output.

EBFT (Guo et al. 2024) and Wanda++'s regional optimisation (2025) fine-tune each block, masks frozen, so that
the pruned block fed the pruned model's inputs X reproduces the dense block's output on the dense inputs X~:

    min_{W' : W' = 0 off the mask}  || f(X; W') - f_dense(X~) ||^2 / || f_dense(X~) ||^2.

Steps use mini-batches of calibration windows; a slice of the windows is held out and the weights of the best
held-out loss are kept (early stopping), so a step that only fits the training windows is undone. Zeros stay
exact zeros: the mask is re-applied after every step (Adam's moments could otherwise move a zero). The training
error before/after is reported on an evenly spaced sample of the training windows, as many as are held out."""
from __future__ import annotations

import time

import torch

from ..calibration import move_to


def _loss(block, chunks, inputs, targets, device) -> torch.Tensor:
    """Relative squared error of the block's outputs over the given batch chunks (a differentiable sum)."""
    num = torch.zeros((), device=device)
    den = torch.zeros((), device=device)
    for start, x, kw in chunks:
        y = block(x.to(device), **move_to(kw, device))
        y = y[0] if isinstance(y, tuple) else y
        t = targets[start:start + x.shape[0]].to(device)
        num = num + (y.float() - t.float()).pow(2).sum()
        den = den + t.float().pow(2).sum()
    return num / den.clamp_min(1e-30)


def tune_block(block, linears: dict, inputs, targets: torch.Tensor, cfg, device) -> dict:
    """Tune `linears`' kept weights in place; returns the log (errors before/after, steps, best step, seconds)."""
    t0 = time.perf_counter()
    chunks = list(inputs.batches())
    n_hold = max(1, round(len(chunks) * cfg.block_tune_holdout))
    if n_hold >= len(chunks):
        raise ValueError(f"block tuning needs more calibration batches than the {n_hold} held out")
    train, held = chunks[:-n_hold], chunks[-n_hold:]
    # the training error is a diagnostic: measured on as many evenly spaced training windows as are held out,
    # not all of them (two passes over every window were a third of the stage's time at 256 windows)
    probe = train[::max(1, len(train) // n_hold)][:n_hold]
    params = [lin.weight for lin in linears.values()]
    masks = [p.detach() != 0 for p in params]
    grads_before = {id(p): p.requires_grad for p in block.parameters()}
    for p in block.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.block_tune_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    every = max(1, cfg.block_tune // 10)
    with torch.enable_grad():
        with torch.no_grad():
            held_before = float(_loss(block, held, inputs, targets, device))
            train_before = float(_loss(block, probe, inputs, targets, device))
        best, best_step = held_before, 0
        best_weights = [p.detach().clone() for p in params]
        for step in range(1, cfg.block_tune + 1):
            pick = torch.randperm(len(train), generator=gen)[:cfg.block_tune_batch].tolist()
            opt.zero_grad(set_to_none=True)
            _loss(block, [train[i] for i in pick], inputs, targets, device).backward()
            opt.step()
            with torch.no_grad():
                for p, m in zip(params, masks):
                    p.mul_(m)
            if step % every == 0 or step == cfg.block_tune:
                with torch.no_grad():
                    held_now = float(_loss(block, held, inputs, targets, device))
                if held_now < best:
                    best, best_step = held_now, step
                    best_weights = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, w in zip(params, best_weights):
            p.copy_(w)
        train_after = float(_loss(block, probe, inputs, targets, device))
    for p in block.parameters():
        p.requires_grad_(grads_before[id(p)])
    for p, m in zip(params, masks):                       # masks frozen: checked, not assumed
        if bool((p.detach() != 0)[~m].any()):
            raise RuntimeError("block tuning moved a pruned weight")
    return {"train_error_before": train_before, "train_error_after": train_after, "held_error_before": held_before,
            "held_error_after": best, "best_step": best_step, "steps": cfg.block_tune,
            "held_windows": sum(x.shape[0] for _, x, _ in held),
            "train_error_windows": sum(x.shape[0] for _, x, _ in probe), "seconds": time.perf_counter() - t0}
