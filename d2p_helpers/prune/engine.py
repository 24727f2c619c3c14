"""The sequential layer-wise pruner (the SparseGPT/Wanda block loop), model-agnostic.

Capture the inputs of block 0; for each block: collect statistics over the calibration
windows with hooks on the dense block, prune every linear, then run the *pruned* block to
make the next block's inputs. Only the current block needs to sit on the compute device.

Optional stages compose with every method (the method keeps its own score and update):
per-block sparsity (OWL) before the loop, then per linear: mask refinement (DSnoT or
Gram-matrix swaps) and least-squares reconstruction of the kept weights (exact, or by conjugate gradient)."""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..calibration import (BlockInputs, attach_stats, block_forward, capture_block_inputs, capture_linear_inputs,
                           move_to, run_block)
from ..masks import is_valid_n_of_m, sparsity_of
from ..models import get_adapter
from .config import SELECTORS, PruneConfig, PruneError  # noqa: F401  (re-exported)
from .context import BlockContext
from .d2prune import frozen_roles
from .magnitude import prune_magnitude
from .methods import METHODS, METHODS_BY_NAME, solve_linear, solver_plan, unit_plan  # noqa: F401  (re-exported)



@dataclass
class PruneReport:
    """What a pruning run did: per-linear sparsity, error and time, and the protocol."""
    config: dict
    per_linear: list = field(default_factory=list)
    frozen_per_block: list = field(default_factory=list)
    block_sparsity: list = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    prune_seconds: float = 0.0
    forward_seconds: float = 0.0
    selector_seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    block_tune: list = field(default_factory=list)
    selector_log: list | dict | None = None     # what a frozen-projection policy measured and chose

    @property
    def achieved_sparsity(self) -> float:
        zeros = sum(r["zeros"] for r in self.per_linear)
        return zeros / max(1, sum(r["numel"] for r in self.per_linear))

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
                "stage_seconds": self.stage_seconds, "frozen_per_block": self.frozen_per_block,
                "block_sparsity": self.block_sparsity, "per_linear": self.per_linear,
                **({"block_tune": self.block_tune} if self.block_tune else {}),
                **({"selector_log": self.selector_log} if self.selector_log is not None else {})}


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


def dense_error(old: torch.Tensor, new: torch.Tensor, st) -> float | None:
    """||W0 X~ - W' X||^2 / ||W0 X~||^2: the error toward the dense model's output at this linear (X~ its inputs
    there, X the pruned model's), from the three Gram matrices of the dense stream."""
    G, C, Gd = st.hessian(), st.cross_hessian(), st.dense_hessian()
    den = ((old @ Gd) * old).sum()
    num = den - 2 * ((old @ C) * new).sum() + ((new @ G) * new).sum()
    return float(num / den) if den > 0 else None


def prune_unit(solver: str, old: torch.Tensor, st, cfg: PruneConfig, report: PruneReport,
               frozen: bool = False) -> tuple[torch.Tensor, dict]:
    """The unit's solver, then the optional stages; each stage's error before/after and seconds in the row.
    `frozen`: D²Prune's frozen projection, which stays un-updated (no reconstruction unless asked).
    With the dense stream the stages' errors are toward the dense model's output (row["error_target"])."""
    ts = time.perf_counter()
    new, info = solve_linear(solver, old, st, cfg)
    gram = st.gram if st else None
    den = ((old @ gram) * old).sum() if gram is not None else None     # shared by every error below
    track = cfg.track_error != "no" or cfg.stages     # "no": no error rows unless a stage needs them
    row = {"solver": solver, "frozen": frozen, "rel_error": relative_error(old, new, gram, den) if track else None,
           "seconds": time.perf_counter() - ts, **info}
    toward_dense = st is not None and st.cross_hessian() is not None
    error = (lambda W: dense_error(old, W, st)) if toward_dense else (lambda W: relative_error(old, W, gram, den))
    if toward_dense:
        row["error_target"] = "dense"
        row["dense_error"] = error(new)
    err = row["dense_error"] if toward_dense else row["rel_error"]
    if cfg.refine != "none":
        from .refine import refine
        new, err = _stage(row, report, "refine", err, error, lambda: refine(cfg.refine, old, new, st, cfg.nm,
                                                                           cfg.refine_iters))
    if cfg.reconstruct != "none" and frozen and not cfg.reconstruct_frozen:
        row["reconstruct_skipped"] = "frozen projection, kept un-updated (reconstruct_frozen includes it)"
    elif cfg.reconstruct != "none":
        from .reconstruct import conjugate_gradient, exact
        cross = st.cross_hessian() if cfg.reconstruct_target == "dense" else None
        solve = (lambda: exact(old, new == 0, st.hessian(), cfg.percdamp, cross)) if cfg.reconstruct == "exact" \
            else (lambda: conjugate_gradient(old, new, st.hessian(), cfg.percdamp, cfg.reconstruct_iters, cross))
        new, err = _stage(row, report, "reconstruct", err, error, solve)
    if cfg.correct == "scale":
        from .reconstruct import scale_rows
        scales = {}

        def correct():
            out, scales["s"] = scale_rows(old, new, st.hessian(), st.dense_hessian() if toward_dense else None)
            return out
        new, err = _stage(row, report, "correct", err, error, correct)
        row["correct_scale_range"] = [float(scales["s"].min()), float(scales["s"].max())]
    return new, row


def _stage(row: dict, report: PruneReport, name: str, before, error, run) -> tuple[torch.Tensor, float]:
    """Run one stage: (its output, its error after). `before` is the error after the step before it."""
    ts = time.perf_counter()
    out = run()
    secs = time.perf_counter() - ts
    after = error(out)
    row.update({f"{name}_error_before": before, f"{name}_error_after": after, f"{name}_seconds": secs})
    report.stage_seconds[name] = report.stage_seconds.get(name, 0.0) + secs
    return out, after


def calibration_samples(tokenizer, cfg: PruneConfig, model=None):
    """The calibration windows (one text, `self`, or a mixture such as `news+self`) and their description:
    source, counts, a hash of the token ids and, for generated text, the sampling settings."""
    from ..data import SELF, SELF_SAMPLING, calib_parts, mixed_calibration, windows_fingerprint
    if tokenizer is None:
        raise PruneError("a tokenizer (or explicit samples) is needed to build calibration windows")
    win = mixed_calibration(tokenizer, cfg.calib, cfg.nsamples, cfg.seqlen, cfg.seed, model)
    info = {**win.describe(), "ids_sha1": windows_fingerprint(win.ids)}
    if SELF in calib_parts(cfg.calib):
        info["self_generated"] = {**SELF_SAMPLING, "seed": cfg.seed, "model": getattr(model, "d2p_source", None),
                                  "text_sample": tokenizer.decode(win.ids[0][:48]), **win.notes}
    return [{"input_ids": w[None]} for w in win.ids], info


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
                progress: bool = True, policy=None) -> PruneReport:
    """Prune `model` in place: the one entry of `prune()`, `d2p prune` and the studies.

    The q/k/v choice is cfg.frozen: a fixed set of roles, a per-block policy (auto:outlier, auto:kl; or
    `policy`, a selectors.FrozenPolicy) that reads each block's BlockContext, or auto:ppl, three whole
    prunings scored on validation text."""
    cfg.validate()
    check_model(model, cfg)
    if cfg.frozen == "auto:ppl" and policy is None:
        from .selectors import choose_by_val_ppl
        return choose_by_val_ppl(model, cfg, tokenizer, samples, progress, prune_with=run_pruning)
    if cfg.frozen in SELECTORS and policy is None:
        from .selectors import block_policy
        policy = block_policy(cfg, model)
    choose_frozen = policy.choose if policy is not None else None
    adapter, t_start = get_adapter(model), time.perf_counter()
    blocks, report = adapter.blocks(model), PruneReport(config=asdict(cfg))
    home = next(model.parameters()).device
    if not METHODS_BY_NAME[cfg.method].uses_data and cfg.track_error != "yes":
        return _prune_without_data(model, cfg, adapter, blocks, report, t_start)
    if samples is None:
        ts = time.perf_counter()
        samples, calib_info = calibration_samples(tokenizer, cfg, model)
        calib_info["seconds"] = time.perf_counter() - ts       # tokenising, or generating the self text
    report.calibration = calib_info or {"samples": len(samples)}
    device = torch.device(cfg.device) if cfg.device else home
    inputs = _capture(model, blocks, samples, device, cfg.batch_size)
    dense = None
    if cfg.dense_stream:       # the dense model's block inputs, advanced by a dense copy of each block
        dense = BlockInputs(inputs.hidden.clone(), inputs.kwargs_by_batch, inputs.batch_size)
        report.calibration["dense_stream_bytes"] = dense.hidden.numel() * dense.hidden.element_size()
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
        _prune_block(block, index, adapter, inputs, bcfg, report, fixed, choose_frozen, device, dense)
        blocks[index] = block.to(home)
    report.prune_seconds = time.perf_counter() - t_start
    if policy is not None:
        report.selector_log = policy.log
    return report


def _prune_block(block, index, adapter, inputs, cfg, report, fixed, choose_frozen, device, dense=None) -> None:
    """Statistics on the block, every unit pruned, then the pruned block's outputs become the inputs.

    One pass of the dense block gives every linear's statistics (the authors' algorithm); with
    `cfg.sequential` each group of linears sharing an input (q/k/v, o, gate/up, down) is pruned in turn, its
    statistics from the block as pruned so far. With a dense stream, a dense copy of the block runs beside it
    on the dense model's inputs, one batch at a time."""
    linears, units, qkv = adapter.linears(block), block_units(adapter, block), adapter.qkv_names(block)
    dense_block = copy.deepcopy(block) if dense is not None else None
    dense_out = torch.empty_like(dense.hidden) if dense is not None else None
    outputs = torch.empty_like(inputs.hidden)
    groups = input_groups(block, linears, inputs, device) if cfg.sequential else [list(linears)]
    frozen = fixed if fixed is not None else set()
    for g, group in enumerate(groups):
        ts = time.perf_counter()
        stats = _block_stats(block, {n: linears[n] for n in group}, inputs, outputs, cfg, device, dense,
                             dense_block, dense_out if g == 0 else None, stop_after_group=g > 0)
        if g > 0:
            report.stage_seconds["sequential"] = report.stage_seconds.get("sequential", 0.0) + \
                time.perf_counter() - ts
        if choose_frozen is not None:      # one group (validated): q/k/v's statistics are in this pass
            ts = time.perf_counter()
            frozen = choose_frozen(BlockContext(index, block, linears, qkv, stats, inputs, outputs, cfg, device,
                                                adapter.attention_path(block)))
            report.selector_seconds += time.perf_counter() - ts
        group_units = [u for u, (name, _) in units.items() if name in group]
        plan = unit_plan(cfg.method, group_units, qkv, frozen)
        for unit in group_units:
            name, rows = units[unit]
            W = linears[name].weight
            old = W.detach().float()
            old = old if rows is None else old[rows]
            solver, is_frozen = plan[unit]
            new, row = prune_unit(solver, old, stats[name].rows(rows), cfg, report, frozen=is_frozen)
            (W.data if rows is None else W.data[rows]).copy_(new.to(W.dtype))
            report.per_linear.append(_row(index, unit, old, new, cfg, {**row, "group": g}))
        del stats
    if cfg.method == "d2prune":
        report.frozen_per_block.append("".join(r for r in "qkv" if r in frozen) or "none")
    if cfg.block_tune:
        from .block_tune import tune_block
        ts = time.perf_counter()
        log = tune_block(block, linears, inputs, dense_out, cfg, device)
        report.stage_seconds["block_tune"] = report.stage_seconds.get("block_tune", 0.0) + \
            time.perf_counter() - ts
        report.block_tune.append({"block": index, **log})
    tf = time.perf_counter()
    run_block(block, inputs, outputs, device)
    report.forward_seconds += time.perf_counter() - tf
    inputs.hidden = outputs
    if dense is not None:
        dense.hidden = dense_out


def input_groups(block, linears: dict, inputs, device) -> list[list[str]]:
    """The block's linears in the order they run, grouped by the input they share (q/k/v; o; gate/up; down),
    found from one forward of one calibration batch: no layer names needed."""
    order, seen = [], []                     # (name, input tensor), tensors held so ids stay unique

    def hook(name, _m, inp, _out):
        if name not in {n for n, _ in order}:
            order.append((name, inp[0]))
    handles = [lin.register_forward_hook(lambda m, i, o, name=name: hook(name, m, i, o))
               for name, lin in linears.items()]
    try:
        _start, x, kw = next(iter(inputs.batches()))
        block(x.to(device), **move_to(kw, device))
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    for name, t in order:
        if seen and t is seen[-1]:
            groups[-1].append(name)
        else:
            groups.append([name])
            seen.append(t)
    missing = [n for n in linears if n not in {m for g in groups for m in g}]
    return groups + ([missing] if missing else [])


class _StopForward(Exception):
    """Raised by a hook once the last linear a pass needs has seen its input: the rest of the block is skipped."""


def _stop_after(linear) -> "torch.utils.hooks.RemovableHandle":
    def hook(_m, _inp, _out):
        raise _StopForward
    return linear.register_forward_hook(hook)


def _forward_or_stop(block, x, kw, device):
    try:
        return block_forward(block, x, kw, device)
    except _StopForward:
        return None


def _block_stats(block, linears, inputs, outputs, cfg, device, dense, dense_block, dense_out,
                 stop_after_group: bool = False) -> dict:
    """One pass over the calibration batches: the statistics of `linears`, the block's outputs into `outputs`,
    and (dense stream) the dense copy's inputs at each linear beside them and its outputs into `dense_out`.

    `stop_after_group` (a later group of --sequential: `linears` in the order they run, no outputs wanted):
    each forward stops once the group's last linear has run, so the o group's pass skips the MLP."""
    method = METHODS_BY_NAME[cfg.method]
    gram = set(linears) if method.needs_gram or cfg.stages or cfg.track_error == "yes" else set()
    store = {} if dense is not None else None
    stats, handles = attach_stats(linears, gram, set(linears) if method.needs_d2_stats else set(), device,
                                  dense_inputs=store)
    if dense_block is not None:
        dense_linears = dict(dense_block.named_modules())
        handles += capture_linear_inputs({n: dense_linears[n] for n in linears}, store)
    if stop_after_group:                         # registered last: runs after the statistics hooks
        assert dense_out is None, "a pass that stops early cannot give the dense block's outputs"
        last = list(linears)[-1]
        handles.append(_stop_after(linears[last]))
        if dense_block is not None:
            handles.append(_stop_after(dense_linears[last]))
    try:
        for start, x, kw in inputs.batches():    # run_block's loop, with the dense copy interleaved per batch
            rows = slice(start, start + x.shape[0])
            if dense_block is not None:          # its hooks fill `store` for the pruned pass of this batch
                yd = _forward_or_stop(dense_block, dense.hidden[rows], kw, device)
                if dense_out is not None:
                    dense_out[rows] = yd.to(dense_out.device)
            y = _forward_or_stop(block, x, kw, device)
            if y is not None:
                outputs[rows] = y.to(outputs.device)
    finally:
        for h in handles:
            h.remove()
    return stats


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
            report.per_linear.append(_row(index, name, old, new, cfg, {"solver": "magnitude", "rel_error": None,
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
