"""Perplexity by the paper's protocol: join the test text, non-overlapping windows, exp(mean NLL)."""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import eval_windows


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch_size: int = 1, device: str | None = None,
               progress: bool = True, desc: str = "ppl") -> float:
    """exp of the mean next-token NLL over every predicted position of every window.

    All windows have the same length, so this equals the paper's exp(sum(L * mean_loss) / (n * L))."""
    device = device or next(model.parameters()).device
    nll, count = 0.0, 0
    for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, disable=not progress, leave=False):
        batch = windows[start:start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits.float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                               reduction="sum")
        nll += loss.item()
        count += batch[:, 1:].numel()
    return math.exp(nll / count)


def perplexities(model, tokenizer, specs: list[str], seqlen: int, max_windows: int | None,
                 batch_size: int = 1, progress: bool = True, device: str | None = None) -> tuple[dict, dict]:
    """{text: ppl} and {text: window description} for each evaluation text."""
    ppl, sources = {}, {}
    for spec in specs:
        win = eval_windows(tokenizer, spec, seqlen, max_windows)
        t0 = time.perf_counter()
        ppl[spec] = perplexity(model, win.ids, batch_size, device=device, progress=progress, desc=f"ppl {spec}")
        sources[spec] = {**win.describe(), "seconds": time.perf_counter() - t0}
    return ppl, sources
