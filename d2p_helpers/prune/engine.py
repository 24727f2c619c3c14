"""The sequential layer-wise pruner (the SparseGPT/Wanda block loop), model-agnostic.

Capture the inputs of block 0; for each block: collect statistics over the calibration
windows with hooks on the dense block, prune every linear, then run the *pruned* block to
make the next block's inputs. Only the current block needs to sit on the compute device.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..calibration import attach_stats, capture_block_inputs, run_block
from ..masks import is_valid_n_of_m, parse_pattern, sparsity_of
from ..models import get_adapter
from .d2prune import FROZEN_CHOICES, frozen_roles, prune_d2_frozen, prune_d2_update
from .magnitude import prune_magnitude
from .sparsegpt import prune_obs
from .wanda import prune_rows, wanda_score

METHODS = ("magnitude", "wanda", "sparsegpt", "d2-sparsegpt", "d2-wanda", "d2prune")
SOLVERS_WITH_GRAM = ("sparsegpt", "d2-update")
SOLVERS_WITH_D2 = ("d2-update", "d2-frozen")


class PruneError(ValueError):
    """Invalid pruning request; raised before any work is done."""


@dataclass
class PruneConfig:
    method: str
    sparsity: float | None = None
    pattern: str | None = None
    calib: str = "news"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    r1: float = 1.0
    r2: float = 0.0
    s: float = 1500.0
    frozen: str | None = None          # q|k|v|none|all|auto:ppl|auto:kl|auto:outlier; None = model default
    d2_norm: str = "authors"
    rho: float = 1.0
    outlier_def: str = "score"
    blocksize: int = 128
    percdamp: float = 0.01
    batch_size: int = 1
    track_error: bool | None = None   # None: only where the Gram matrix is built anyway (OBS solvers)
    device: str | None = None

    @property
    def nm(self):
        return parse_pattern(self.pattern)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise PruneError(f"unknown method '{self.method}': expected one of {', '.join(METHODS)}")
        if (self.sparsity is None) == (self.pattern is None):
            raise PruneError("give exactly one of sparsity (unstructured) or pattern (N:M)")
        if self.sparsity is not None and not 0 <= self.sparsity < 1:
            raise PruneError(f"sparsity must be in [0, 1), got {self.sparsity}")
        try:
            self.nm
        except ValueError as exc:
            raise PruneError(str(exc)) from None
        if self.nsamples < 1 or self.seqlen < 2:
            raise PruneError(f"need nsamples >= 1 and seqlen >= 2, got {self.nsamples}, {self.seqlen}")
        if self.s <= 0:
            raise PruneError(f"s must be > 0, got {self.s}")
        if self.d2_norm not in ("authors", "mean"):
            raise PruneError(f"d2_norm must be 'authors' or 'mean', got '{self.d2_norm}'")
        from .selectors import SELECTORS
        if self.frozen is not None and self.frozen not in FROZEN_CHOICES + SELECTORS:
            raise PruneError(f"frozen must be one of {', '.join(FROZEN_CHOICES + SELECTORS)}, got '{self.frozen}'")
        if self.frozen is not None and self.method != "d2prune":
            raise PruneError(f"frozen applies to method d2prune only (got method '{self.method}')")


@dataclass
class PruneReport:
    """What a pruning run did: per-linear sparsity, error and time, and the protocol."""
    config: dict
    per_layer: list = field(default_factory=list)
    frozen_per_layer: list = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    prune_seconds: float = 0.0
    forward_seconds: float = 0.0
    selector_seconds: float = 0.0
    notes: list = field(default_factory=list)

    @property
    def achieved_sparsity(self) -> float:
        zeros = sum(r["zeros"] for r in self.per_layer)
        return zeros / max(1, sum(r["numel"] for r in self.per_layer))

    @property
    def floor_ratio(self) -> float | None:
        """Prune time / two forward passes of every block over the calibration windows (None: no pass ran)."""
        return self.prune_seconds / (2 * self.forward_seconds) if self.forward_seconds > 0 else None

    def to_record(self) -> dict:
        cfg = dict(self.config)
        return {"method": cfg.pop("method"), "sparsity": cfg.pop("sparsity"), "pattern": cfg.pop("pattern"),
                "options": cfg, "calibration": self.calibration,
                "achieved_sparsity": self.achieved_sparsity, "prune_seconds": round(self.prune_seconds, 2),
                "forward_seconds": round(self.forward_seconds, 2), "floor_ratio": round(self.floor_ratio, 3) if self.floor_ratio is not None else None,
                "selector_seconds": round(self.selector_seconds, 2), "frozen_per_layer": self.frozen_per_layer,
                "per_layer": self.per_layer, "notes": self.notes}


def solver_plan(method: str, names: list[str], qkv: dict[str, str], frozen: set[str]) -> dict[str, str]:
    """Which solver prunes each linear of a block."""
    if method in ("magnitude", "wanda", "sparsegpt"):
        return {n: method for n in names}
    if method == "d2-sparsegpt":
        return {n: "d2-update" for n in names}
    if method == "d2-wanda":
        return {n: "d2-frozen" for n in names}
    frozen_names = {qkv[r] for r in frozen}
    return {n: "d2-frozen" if n in frozen_names else "d2-update" for n in names}


def solve_linear(solver: str, weight: torch.Tensor, st, cfg: PruneConfig) -> tuple[torch.Tensor, dict]:
    """New fp32 weight for one linear."""
    W = weight.detach().float()
    sp, nm = cfg.sparsity, cfg.nm
    if solver == "magnitude":
        return prune_magnitude(W, sp, nm), {}
    if solver == "wanda":
        return prune_rows(W, wanda_score(W, st.nu()), sp, nm), {}
    if solver == "sparsegpt":
        return prune_obs(W, st.hessian(), sp, nm, cfg.blocksize, cfg.percdamp)
    if solver == "d2-update":
        return prune_d2_update(W, st, sp, nm, cfg.r1, cfg.r2, cfg.s, cfg.d2_norm, cfg.blocksize, cfg.percdamp)
    if solver == "d2-frozen":
        return prune_d2_frozen(W, st, sp, nm, cfg.r1, cfg.r2, cfg.s, cfg.d2_norm), {}
    raise PruneError(f"unknown solver {solver}")


def relative_error(old: torch.Tensor, new: torch.Tensor, gram: torch.Tensor | None) -> float | None:
    """||(W - W') X||^2 / ||W X||^2 over the calibration inputs, from the Gram matrix."""
    if gram is None:
        return None
    delta = old - new
    num = ((delta @ gram) * delta).sum()
    den = ((old @ gram) * old).sum()
    return float(num / den) if den > 0 else None


def calibration_samples(model, tokenizer, cfg: PruneConfig):
    from ..data import calibration_windows
    if tokenizer is None:
        raise PruneError("a tokenizer (or explicit samples) is needed to build calibration windows")
    win = calibration_windows(tokenizer, cfg.calib, cfg.nsamples, cfg.seqlen, cfg.seed)
    return [{"input_ids": w[None]} for w in win.ids], win.describe()


def check_model(model, cfg: PruneConfig) -> None:
    """Errors that depend on the model's shapes, raised before any work."""
    adapter = get_adapter(model)
    if cfg.nm:
        n, m = cfg.nm
        for name, lin in adapter.linears(adapter.blocks(model)[0]).items():
            if lin.in_features % m:
                raise PruneError(f"pattern {cfg.pattern}: M={m} does not divide the input width "
                                 f"{lin.in_features} of {name}")


@torch.no_grad()
def run_pruning(model, cfg: PruneConfig, tokenizer=None, samples=None, calib_info=None,
                progress: bool = True, choose_frozen=None) -> PruneReport:
    """Prune `model` in place. `choose_frozen(index, ctx) -> role-set` overrides the fixed choice."""
    cfg.validate()
    check_model(model, cfg)
    adapter = get_adapter(model)
    blocks = adapter.blocks(model)
    home = next(model.parameters()).device
    device = torch.device(cfg.device) if cfg.device else home
    report = PruneReport(config=asdict(cfg))
    t_start = time.perf_counter()
    if samples is None:
        samples, calib_info = calibration_samples(model, tokenizer, cfg)
    report.calibration = calib_info or {"samples": len(samples)}
    fixed = None
    if cfg.method == "d2prune" and choose_frozen is None:
        fixed = frozen_roles(cfg.frozen or adapter.default_frozen())
        report.config["frozen"] = cfg.frozen or adapter.default_frozen()
    moved = _non_block_modules(model, blocks)
    for mod in moved:
        mod.to(device)
    inputs = capture_block_inputs(model, blocks, samples, device, cfg.batch_size)
    for mod in moved:
        mod.to(home)
    outputs = torch.empty_like(inputs.hidden)
    obs_method = cfg.method in ("sparsegpt", "d2-sparsegpt", "d2prune")
    needs_gram_all = cfg.track_error if cfg.track_error is not None else obs_method
    if cfg.method == "magnitude" and not needs_gram_all:
        return _prune_without_data(model, cfg, adapter, blocks, report, t_start)
    for index in tqdm(range(len(blocks)), desc=f"prune {cfg.method}", disable=not progress):
        block = blocks[index].to(device)
        linears = adapter.linears(block)
        qkv = adapter.qkv_names(block)
        frozen = fixed if fixed is not None else set()
        d2_all = cfg.method in ("d2-sparsegpt", "d2-wanda", "d2prune")
        gram_names = set(linears) if needs_gram_all or obs_method else set()
        stats, handles = attach_stats(linears, gram_names, set(linears) if d2_all else set(), device)
        t0 = time.perf_counter()
        run_block(block, inputs, outputs, device)
        for h in handles:
            h.remove()
        if choose_frozen is not None:
            ts = time.perf_counter()
            frozen = choose_frozen(index, {"block": block, "linears": linears, "qkv": qkv, "stats": stats,
                                           "inputs": inputs, "dense_out": outputs, "cfg": cfg, "device": device})
            report.selector_seconds += time.perf_counter() - ts
        if cfg.method == "d2prune":
            report.frozen_per_layer.append("".join(r for r in "qkv" if r in frozen) or "none")
        plan = solver_plan(cfg.method, list(linears), qkv, frozen)
        for name, lin in linears.items():
            ts = time.perf_counter()
            old = lin.weight.detach().float()
            new, info = solve_linear(plan[name], old, stats[name], cfg)
            row = {"block": index, "name": name, "solver": plan[name], "shape": list(old.shape),
                   "rel_error": relative_error(old, new, stats[name].gram),
                   "zeros": int((new == 0).sum()), "numel": new.numel(), "sparsity": sparsity_of(new),
                   "seconds": round(time.perf_counter() - ts, 4), **info}
            if cfg.nm:
                row["nm_valid"] = is_valid_n_of_m(new, *cfg.nm)
            lin.weight.data.copy_(new.to(lin.weight.dtype))
            report.per_layer.append(row)
        del stats
        tf = time.perf_counter()
        run_block(block, inputs, outputs, device)
        report.forward_seconds += time.perf_counter() - tf
        inputs.hidden, outputs = outputs, inputs.hidden
        blocks[index] = block.to(home)
    report.prune_seconds = time.perf_counter() - t_start
    return report


def _prune_without_data(model, cfg, adapter, blocks, report, t_start):
    """Magnitude pruning needs no calibration pass (unless reconstruction error is asked for)."""
    report.calibration = {"note": "magnitude pruning uses no calibration data"}
    for index, block in enumerate(blocks):
        for name, lin in adapter.linears(block).items():
            old = lin.weight.detach().float()
            new, _ = solve_linear("magnitude", old, None, cfg)
            lin.weight.data.copy_(new.to(lin.weight.dtype))
            report.per_layer.append({"block": index, "name": name, "solver": "magnitude", "shape": list(old.shape),
                                     "rel_error": None, "zeros": int((new == 0).sum()), "numel": new.numel(),
                                     "sparsity": sparsity_of(new), "seconds": 0.0,
                                     **({"nm_valid": is_valid_n_of_m(new, *cfg.nm)} if cfg.nm else {})})
    report.prune_seconds = time.perf_counter() - t_start
    return report


def _non_block_modules(model, blocks):
    """Leaf-most modules outside the block list that own parameters or buffers (embeddings, rotary, norms)."""
    block_ids = {id(m) for m in blocks.modules()}
    out = []
    for mod in model.modules():
        if id(mod) in block_ids:
            continue
        if any(True for _ in mod.parameters(recurse=False)) or any(True for _ in mod.buffers(recurse=False)):
            out.append(mod)
    return out


def save_pruned(model, tokenizer, out_dir, report: PruneReport | None = None) -> None:
    """A HF folder (safetensors) that reloads with from_pretrained; written to a temp dir, then renamed."""
    import json
    import os
    import shutil
    from pathlib import Path
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if report is not None:
        (tmp / "d2p_prune.json").write_text(json.dumps(report.to_record(), indent=2, default=str))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
