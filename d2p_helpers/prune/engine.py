"""The sequential layer-wise pruner (the SparseGPT/Wanda block loop), model-agnostic.

Capture the inputs of block 0; for each block: collect statistics over the calibration
windows with hooks on the dense block, prune every linear, then run the *pruned* block to
make the next block's inputs. Only the current block needs to sit on the compute device.

Optional stages compose with every method (the method keeps its own score and update):
per-block sparsity (OWL) before the loop, then per linear: mask refinement (DSnoT or
Gram-matrix swaps) and least-squares reconstruction of the kept weights (exact, or by conjugate gradient)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..calibration import attach_stats, capture_block_inputs, run_block
from ..masks import is_valid_n_of_m, sparsity_of
from ..models import get_adapter
from .config import PruneConfig, PruneError  # noqa: F401  (re-exported)
from .d2prune import frozen_roles
from .magnitude import prune_magnitude
from .methods import METHODS, METHODS_BY_NAME, solve_linear, solver_plan, unit_plan  # noqa: F401  (re-exported)



@dataclass
class PruneReport:
    """What a pruning run did: per-linear sparsity, error and time, and the protocol."""
    config: dict
    per_layer: list = field(default_factory=list)
    frozen_per_layer: list = field(default_factory=list)
    block_sparsity: list = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    prune_seconds: float = 0.0
    forward_seconds: float = 0.0
    selector_seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
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
                "options": cfg, "calibration": self.calibration, "achieved_sparsity": self.achieved_sparsity,
                "prune_seconds": self.prune_seconds, "forward_seconds": self.forward_seconds,
                "floor_ratio": self.floor_ratio, "selector_seconds": self.selector_seconds,
                "stage_seconds": self.stage_seconds, "frozen_per_layer": self.frozen_per_layer,
                "block_sparsity": self.block_sparsity, "per_layer": self.per_layer, "notes": self.notes}


def relative_error(old: torch.Tensor, new: torch.Tensor, gram: torch.Tensor | None,
                   den: torch.Tensor | None = None) -> float | None:
    """||(W - W') X||^2 / ||W X||^2 over the calibration inputs, from the Gram matrix (`den`: the
    denominator when the caller has it already)."""
    if gram is None:
        return None
    delta = old - new
    num = ((delta @ gram) * delta).sum()
    den = ((old @ gram) * old).sum() if den is None else den
    return float(num / den) if den > 0 else None


def prune_unit(solver: str, old: torch.Tensor, st, cfg: PruneConfig, report: PruneReport,
               frozen: bool = False) -> tuple[torch.Tensor, dict]:
    """The unit's solver, then the optional stages; each stage's error before/after and seconds in the row.
    `frozen`: D²Prune's frozen projection, which stays un-updated (no reconstruction unless asked)."""
    ts = time.perf_counter()
    new, info = solve_linear(solver, old, st, cfg)
    gram = st.gram if st else None
    den = ((old @ gram) * old).sum() if gram is not None else None     # shared by every error below
    track = cfg.track_error != "no" or cfg.stages     # "no": no error rows unless a stage needs them
    row = {"solver": solver, "frozen": frozen, "rel_error": relative_error(old, new, gram, den) if track else None,
           "seconds": time.perf_counter() - ts, **info}
    err = row["rel_error"]
    if cfg.refine != "none":
        from .refine import refine
        new, err = _stage(row, report, "refine", old, err, den, st, lambda: refine(cfg.refine, old, new, st,
                                                                                    cfg.nm, cfg.refine_iters))
    if cfg.reconstruct != "none" and frozen and not cfg.reconstruct_frozen:
        row["reconstruct_skipped"] = "frozen projection, kept un-updated (reconstruct_frozen includes it)"
    elif cfg.reconstruct != "none":
        from .reconstruct import conjugate_gradient, exact
        solve = (lambda: exact(old, new == 0, st.hessian(), cfg.percdamp)) if cfg.reconstruct == "exact" else \
            (lambda: conjugate_gradient(old, new, st.hessian(), cfg.percdamp, cfg.reconstruct_iters))
        new, err = _stage(row, report, "reconstruct", old, err, den, st, solve)
    return new, row


def _stage(row: dict, report: PruneReport, name: str, old, before, den, st, run) -> tuple[torch.Tensor, float]:
    """Run one stage: (its output, its error after). `before` is the error after the step before it."""
    ts = time.perf_counter()
    out = run()
    secs = time.perf_counter() - ts
    after = relative_error(old, out, st.gram, den)
    row.update({f"{name}_error_before": before, f"{name}_error_after": after, f"{name}_seconds": secs})
    report.stage_seconds[name] = report.stage_seconds.get(name, 0.0) + secs
    return out, after


def calibration_samples(tokenizer, cfg: PruneConfig):
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


def block_units(adapter, block) -> dict[str, tuple[str, slice | None]]:
    """What the engine prunes one at a time: every linear, fused ones split into their row groups."""
    groups = adapter.row_groups(block)
    units = {}
    for name in adapter.linears(block):
        for role, rows in groups.get(name, {None: None}).items():
            units[name if role is None else f"{name}[{role}]"] = (name, rows)
    return units


@torch.no_grad()
def run_pruning(model, cfg: PruneConfig, tokenizer=None, samples=None, calib_info=None,
                progress: bool = True, choose_frozen=None) -> PruneReport:
    """Prune `model` in place. `choose_frozen(index, ctx) -> role-set` overrides the fixed choice."""
    cfg.validate()
    check_model(model, cfg)
    adapter, t_start = get_adapter(model), time.perf_counter()
    blocks, report = adapter.blocks(model), PruneReport(config=asdict(cfg))
    home = next(model.parameters()).device
    if not METHODS_BY_NAME[cfg.method].uses_data and cfg.track_error != "yes":
        return _prune_without_data(model, cfg, adapter, blocks, report, t_start)
    if samples is None:
        samples, calib_info = calibration_samples(tokenizer, cfg)
    report.calibration = calib_info or {"samples": len(samples)}
    device = torch.device(cfg.device) if cfg.device else home
    inputs = _capture(model, blocks, samples, device, cfg.batch_size)
    sparsities = [cfg.sparsity] * len(blocks)
    if cfg.layer_sparsity == "owl":
        from .owl import owl_block_sparsities
        ts = time.perf_counter()
        sparsities = owl_block_sparsities(blocks, adapter, inputs, device, cfg)
        report.stage_seconds["owl"] = time.perf_counter() - ts
    report.block_sparsity = sparsities
    fixed = None
    if cfg.method == "d2prune" and choose_frozen is None:
        report.config["frozen"] = cfg.frozen or adapter.default_frozen()
        fixed = frozen_roles(report.config["frozen"])
    for index in tqdm(range(len(blocks)), desc=f"prune {cfg.method}", disable=not progress):
        block = blocks[index].to(device)
        bcfg = dataclasses.replace(cfg, sparsity=sparsities[index])
        _prune_block(block, index, adapter, inputs, bcfg, report, fixed, choose_frozen, device)
        blocks[index] = block.to(home)
    report.prune_seconds = time.perf_counter() - t_start
    return report


def _prune_block(block, index, adapter, inputs, cfg, report, fixed, choose_frozen, device) -> None:
    """Statistics on the dense block, every unit pruned, then the pruned block's outputs become the inputs."""
    linears, units, qkv = adapter.linears(block), block_units(adapter, block), adapter.qkv_names(block)
    method = METHODS_BY_NAME[cfg.method]
    gram = set(linears) if method.needs_gram or cfg.stages or cfg.track_error == "yes" else set()
    stats, handles = attach_stats(linears, gram, set(linears) if method.needs_d2_stats else set(), device)
    outputs = run_block(block, inputs, None, device)
    for h in handles:
        h.remove()
    frozen = fixed if fixed is not None else set()
    if choose_frozen is not None:
        ts = time.perf_counter()
        frozen = choose_frozen(index, {"block": block, "linears": linears, "qkv": qkv, "stats": stats,
                                       "inputs": inputs, "dense_out": outputs, "cfg": cfg, "device": device})
        report.selector_seconds += time.perf_counter() - ts
    if cfg.method == "d2prune":
        report.frozen_per_layer.append("".join(r for r in "qkv" if r in frozen) or "none")
    plan = unit_plan(cfg.method, list(units), qkv, frozen)
    new_weights = {}
    for unit, (name, rows) in units.items():
        old = linears[name].weight.detach().float()
        old = old if rows is None else old[rows]
        solver, is_frozen = plan[unit]
        new, row = prune_unit(solver, old, stats[name].rows(rows), cfg, report, frozen=is_frozen)
        new_weights.setdefault(name, []).append((rows, new))
        report.per_layer.append(_row(index, unit, old, new, cfg, row))
    for name, parts in new_weights.items():
        W = linears[name].weight
        for rows, new in parts:
            (W.data if rows is None else W.data[rows]).copy_(new.to(W.dtype))
    del stats
    tf = time.perf_counter()
    run_block(block, inputs, outputs, device)
    report.forward_seconds += time.perf_counter() - tf
    inputs.hidden = outputs


def _row(index, unit, old, new, cfg, extra) -> dict:
    """One record row per pruned linear (or row group)."""
    row = {"block": index, "name": unit, "shape": list(old.shape), "zeros": int((new == 0).sum()),
           "numel": new.numel(), "sparsity": sparsity_of(new), **extra}
    if cfg.nm:
        row["nm_valid"] = is_valid_n_of_m(new, *cfg.nm)
    return row


def _capture(model, blocks, samples, device, batch_size):
    """Inputs of block 0 for every calibration sample, with embeddings etc. moved to `device` meanwhile."""
    home = next(model.parameters()).device
    moved = _non_block_modules(model, blocks)
    for mod in moved:
        mod.to(device)
    inputs = capture_block_inputs(model, blocks, samples, device, batch_size)
    for mod in moved:
        mod.to(home)
    return inputs


def _prune_without_data(model, cfg, adapter, blocks, report, t_start):
    """Magnitude pruning needs no calibration pass: no tokenising, no capture."""
    report.calibration = {"note": "magnitude pruning uses no calibration data"}
    for index, block in enumerate(blocks):
        for name, lin in adapter.linears(block).items():
            old = lin.weight.detach().float()
            ts = time.perf_counter()
            new = prune_magnitude(old, cfg.sparsity, cfg.nm)
            lin.weight.data.copy_(new.to(lin.weight.dtype))
            report.per_layer.append(_row(index, name, old, new, cfg, {"solver": "magnitude", "rel_error": None,
                                                                       "seconds": time.perf_counter() - ts}))
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
    """A HF folder (safetensors) that reloads with from_pretrained (timm models: models.save_timm, which
    `load_model(DIR)` reloads); written to a temp dir, then renamed."""
    from ..models import save_timm
    from ..record import replace_dir, write_json
    if get_adapter(model).model_type == "timm-vit":
        save_timm(model, out_dir, report.to_record() if report is not None else None)
        return
    with replace_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if report is not None:
            write_json(tmp / "d2p_prune.json", report.to_record())
