"""Calibration: capture the inputs of the first block, and per-linear statistics by hooks.

Statistics are fp32 whatever the model dtype. One `LinearStats` per linear holds what
every method needs (paper-spec §2.3); each is a closed form of the authors' running update.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn


class _Stop(Exception):
    pass


@dataclass
class BlockInputs:
    """Hidden states entering a block, [N, T, D], plus the keyword arguments the model passes."""
    hidden: torch.Tensor
    kwargs_by_batch: dict = field(default_factory=dict)  # batch size -> kwargs captured at that size
    batch_size: int = 1

    def batches(self):
        for start in range(0, self.hidden.shape[0], self.batch_size):
            x = self.hidden[start:start + self.batch_size]
            yield start, x, self.kwargs_by_batch[x.shape[0]]


def move_to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(move_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    return obj


@torch.no_grad()
def capture_block_inputs(model: nn.Module, blocks: nn.ModuleList, samples: list[dict], device,
                         batch_size: int = 1, store_device=None) -> BlockInputs:
    """Run `samples` (model input dicts, batch dim 1) up to block 0 and keep what it receives.

    A pre-forward hook with kwargs captures whatever the installed transformers passes
    (rotary position_embeddings, masks), so no hand-built catcher module is needed."""
    store_device = store_device or device
    captured, kwargs_by_batch = [], {}

    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append(hidden.detach().to(store_device))
        kw = {k: v for k, v in kwargs.items() if k not in ("hidden_states",)}
        for key in ("past_key_values", "past_key_value", "cache"):
            if key in kw:
                kw[key] = None
        kwargs_by_batch.setdefault(hidden.shape[0], move_to(kw, store_device))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            batch = {k: torch.cat([s[k] for s in chunk]).to(device) for k in chunk[0]}
            try:
                model(**batch, **({"use_cache": False} if "input_ids" in batch else {}))
            except _Stop:
                pass
    finally:
        handle.remove()
    return BlockInputs(torch.cat(captured), kwargs_by_batch, batch_size)


def block_forward(block: nn.Module, x: torch.Tensor, kw: dict, device) -> torch.Tensor:
    """One calibration batch through a block on `device`: its hidden-state output (blocks may return tuples)."""
    y = block(x.to(device), **move_to(kw, device))
    return y[0] if isinstance(y, tuple) else y


def run_block(block: nn.Module, inputs: BlockInputs, out: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """Forward every calibration batch through `block`; returns [N, T, D] outputs."""
    out = torch.empty_like(inputs.hidden) if out is None else out
    device = device or inputs.hidden.device
    with torch.no_grad():
        for start, x, kw in inputs.batches():
            out[start:start + x.shape[0]] = block_forward(block, x, kw, device).to(out.device)
    return out


class InputAcc:
    """Statistics of a linear's input; linears fed the same tensor (q/k/v, gate/up) share one."""

    def __init__(self, d_in: int, device, gram: bool, d2: bool, dense: bool = False):
        self.n = 0                     # samples seen
        self.tokens = 0
        self.gram = torch.zeros(d_in, d_in, device=device) if gram else None   # sum_k X_k X_k^T
        # beside the dense model's inputs X~ at the same linear: sum_k X~_k X_k^T and sum_k X~_k X~_k^T
        self.cross = torch.zeros(d_in, d_in, device=device) if dense else None
        self.dense_gram = torch.zeros(d_in, d_in, device=device) if dense else None
        self.sq = torch.zeros(d_in, device=device)          # sum_k ||x_j^(k)||^2
        self.x_sum_tok = torch.zeros(d_in, device=device)   # sum over all tokens of x_j (DSnoT's mean)
        self.d2 = d2
        if d2:
            self.x_k = torch.zeros(d_in, device=device)       # sum_k k ||x_j^(k)||        (frozen path, authors)
            self.x_sqrt2k = torch.zeros(d_in, device=device)  # sum_k sqrt(2k) ||x_j^(k)|| (update path: SparseGPT's sqrt(2/k) input)
            self.x_sum = torch.zeros(d_in, device=device)     # sum_k ||x_j^(k)||          (normalised variant)

    def add(self, x: torch.Tensor, x_dense: torch.Tensor | None = None) -> None:
        if self.cross is not None and x_dense is None:
            raise RuntimeError("dense-target statistics need the dense model's inputs for every batch")
        for b in range(x.shape[0]):
            self.n += 1
            k, xb = self.n, x[b]
            self.tokens += xb.shape[0]
            if self.gram is not None:
                self.gram.addmm_(xb.t(), xb)
            if self.cross is not None:
                self.cross.addmm_(x_dense[b].t(), xb)
                self.dense_gram.addmm_(x_dense[b].t(), x_dense[b])
            xn2 = xb.pow(2).sum(0)
            self.sq += xn2
            self.x_sum_tok += xb.sum(0)
            if self.d2:
                xn = xn2.sqrt()
                self.x_k += k * xn
                self.x_sqrt2k += math.sqrt(2 * k) * xn
                self.x_sum += xn


class LinearStats:
    """Running statistics of one linear: its (possibly shared) input part and its output norms."""

    def __init__(self, d_in: int, d_out: int, device, gram: bool, d2: bool, inp: InputAcc | None = None,
                 dense: bool = False):
        self.inp = inp or InputAcc(d_in, device, gram, d2, dense)
        self.d2 = d2
        self.owns_input = inp is None
        self.m = 0
        if d2:
            self.y_k = torch.zeros(d_out, device=device)      # sum_k k ||y_i^(k)||
            self.y_sum = torch.zeros(d_out, device=device)    # sum_k ||y_i^(k)||

    @property
    def n(self):
        return self.inp.n

    def rows(self, rows: slice | None) -> "LinearStats":
        """The statistics of a row group of a fused linear (timm's qkv): inputs shared, output norms sliced."""
        if rows is None:
            return self
        view = copy.copy(self)
        if self.d2:
            view.y_k, view.y_sum = self.y_k[rows], self.y_sum[rows]
        return view

    @property
    def gram(self):
        return self.inp.gram

    def add(self, x: torch.Tensor, y: torch.Tensor, x_dense: torch.Tensor | None = None) -> None:
        x = x.detach().float()
        x = x[None] if x.dim() == 2 else x.reshape(-1, x.shape[-2], x.shape[-1])   # [samples, tokens, d_in]
        if x_dense is not None:
            x_dense = x_dense.detach().float().reshape(x.shape)
        if self.owns_input:
            self.inp.add(x, x_dense)
        if self.d2:
            y = y.detach().float().reshape(x.shape[0], x.shape[1], -1)
            for b in range(x.shape[0]):
                self.m += 1
                yn = y[b].norm(dim=0)
                self.y_k += self.m * yn
                self.y_sum += yn

    # ---- finished statistics (paper-spec §2.3 symbols)
    def hessian(self) -> torch.Tensor:
        """H = (2/N) sum_k X_k X_k^T, SparseGPT's normalisation."""
        return self.inp.gram * (2.0 / self.n)

    def cross_hessian(self) -> torch.Tensor | None:
        """C = (2/N) sum_k X~_k X_k^T, the dense-target right side's matrix (None: no dense stream)."""
        return None if self.inp.cross is None else self.inp.cross * (2.0 / self.n)

    def dense_hessian(self) -> torch.Tensor | None:
        """(2/N) sum_k X~_k X~_k^T: the dense model's inputs' Gram, for the dense-target error."""
        return None if self.inp.dense_gram is None else self.inp.dense_gram * (2.0 / self.n)

    def nu(self) -> torch.Tensor:
        """nu_j = (1/N) sum_k ||x_j^(k)||^2, Wanda's statistic."""
        return self.inp.sq / self.n

    def x_mean(self) -> torch.Tensor:
        """E[x_j] over all calibration tokens (DSnoT's expected input)."""
        return self.inp.x_sum_tok / self.inp.tokens

    def x_var(self) -> torch.Tensor:
        """Var[x_j] over all calibration tokens (DSnoT's growing criterion), clamped at 0 against rounding."""
        return (self.inp.sq / self.inp.tokens - self.x_mean() ** 2).clamp_min(0)

    def d2_stats(self, s: float, path: str, norm: str = "authors") -> tuple[torch.Tensor, torch.Tensor]:
        """(y_hat, x_hat) for the D² term: the formula lives with the score, in prune/d2prune.py."""
        from .prune.d2prune import d2_norms
        return d2_norms(self, s, path, norm)


def attach_stats(linears: dict[str, nn.Linear], gram: set[str], d2: set[str], device,
                 dense_inputs: dict | None = None) -> tuple[dict, list]:
    """A LinearStats per linear and the hook handles that feed them.

    Linears that receive the very same input tensor share their input statistics: the
    first call records which input each linear sees, later calls skip the duplicates.
    `dense_inputs`: name -> the dense model's input at that linear for the current batch (filled by
    `capture_linear_inputs` on a dense copy of the block just before), for dense-target statistics."""
    stats, handles, first_inputs = {}, [], []   # (input tensor, owner) seen on the first call
    dense = dense_inputs is not None

    def hook(name, lin, inp, out):
        x = inp[0]
        if name not in stats:
            # holding the tensors keeps their memory from being reused by a later, different input
            owner = next((o for t, o in first_inputs if t is x), None)
            shared = stats[owner].inp if owner is not None and (name in gram) == (owner in gram) \
                and (name in d2) == (owner in d2) else None
            stats[name] = LinearStats(lin.in_features, lin.out_features, device, gram=name in gram, d2=name in d2,
                                      inp=shared, dense=dense)
            if shared is None:
                first_inputs.append((x, name))
        stats[name].add(x, out, dense_inputs[name] if dense else None)

    for name, lin in linears.items():
        handles.append(lin.register_forward_hook(lambda m, i, o, name=name: hook(name, m, i, o)))
    return stats, handles


def capture_linear_inputs(linears: dict[str, nn.Linear], store: dict) -> list:
    """Hooks that keep each linear's latest input in `store[name]` (one batch at a time, never the whole set)."""
    def hook(name, _m, inp, _out):
        store[name] = inp[0].detach()
    return [lin.register_forward_hook(lambda m, i, o, name=name: hook(name, m, i, o)) for name, lin in linears.items()]


@torch.no_grad()
def dense_block_stats(model: nn.Module, samples: list[dict], block_index: int, names: list[str] | None = None,
                      gram: bool = True, d2: bool = False, device="cpu") -> tuple[dict, dict]:
    """(linears, stats) of one block of the *dense* model: its inputs come from running blocks 0..b-1 unpruned.

    For studying one layer in isolation (notebooks, per-layer checks); the pruner itself feeds each block the
    outputs of the already pruned blocks before it."""
    from .models import get_adapter
    adapter = get_adapter(model)
    blocks = adapter.blocks(model)
    inputs = capture_block_inputs(model, blocks, samples, device)
    for i in range(block_index):
        inputs.hidden = run_block(blocks[i], inputs)
    linears = {n: lin for n, lin in adapter.linears(blocks[block_index]).items() if names is None or n in names}
    stats, handles = attach_stats(linears, set(linears) if gram else set(), set(linears) if d2 else set(), device)
    try:
        run_block(blocks[block_index], inputs)
    finally:
        for h in handles:
            h.remove()
    return linears, stats
