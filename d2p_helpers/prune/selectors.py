"""Choosing which of q/k/v D²Prune freezes (paper-spec §3, Appendix D), without the test set.

auto:ppl     uniform choice by perplexity on the *validation* split of the calibration text.
auto:kl      per block, Eq. 12 computed: attention-output error + rho * KL(pruned || dense).
auto:outlier per block, the projection with the highest outlier ratio (Appendix D).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..attention import attention_kl, capture_attention_modules, causal_mask, eager_attention
from ..calibration import move_to
from .config import OUTLIER_DEFS, PruneError
from .d2prune import d2_wanda_score
from .context import BlockContext
from .methods import solve_linear

KL_SAMPLES = 8   # calibration windows used to score each candidate in auto:kl


def outlier_ratio(weight: torch.Tensor, stats, cfg, definition: str) -> float:
    """Fraction of entries above a multiple of the mean.

    weight:  Eq. 18 as printed, |W| > mean|W| (about 40% for any bell-shaped matrix, so it
             barely separates q/k/v and cannot give Figure 11's 0.4-2.3%);
    weight3: |W| > 3 mean|W| (OWL's multiplier on raw weights);
    score:   the D²-Wanda score > 3 x its mean, as the authors' `check_outlier_mean` (default)."""
    W = weight.detach().float()
    if definition == "weight":
        s, mult = W.abs(), 1.0
    elif definition == "weight3":
        s, mult = W.abs(), 3.0
    elif definition == "score":
        y_hat, x_hat = stats.d2_stats(cfg.s, "frozen", cfg.d2_norm)
        s, mult = d2_wanda_score(W, stats.nu(), y_hat, x_hat, cfg.r1, cfg.r2), 3.0
    else:
        raise PruneError(f"outlier definition must be one of {', '.join(OUTLIER_DEFS)}, got '{definition}'")
    return float((s > mult * s.mean()).float().mean())


def choose_by_outlier(ctx: BlockContext, log: list) -> set[str]:
    cfg = ctx.cfg
    ratios = {r: outlier_ratio(ctx.linears[n].weight, ctx.stats[n], cfg, cfg.outlier_def) for r, n in ctx.qkv.items()}
    role = max(ratios, key=ratios.get)
    log.append({"block": ctx.index, "ratios": ratios, "chosen": role})
    return {role}


@torch.no_grad()
def choose_by_kl(ctx: BlockContext, log: list, model, causal: bool) -> set[str]:
    """Try freezing q, k, v in turn on this block; keep the lowest error + rho * KL."""
    cfg, block, linears, qkv, stats = ctx.cfg, ctx.block, ctx.linears, ctx.qkv, ctx.stats
    attn = block.get_submodule(ctx.attention_path)
    attn_linears = [n for n in linears if n.startswith(ctx.attention_path + ".")]
    originals = {n: linears[n].weight.detach().clone() for n in attn_linears}
    batches = list(ctx.inputs.batches())[:max(1, KL_SAMPLES // ctx.inputs.batch_size)]

    def run_attention():
        outs = []
        with capture_attention_modules([attn]) as store:
            for _start, x, kw in batches:
                kw = move_to(kw, ctx.device)
                if causal:
                    kw = {**kw, "attention_mask": causal_mask(x.shape[1], x.dtype, ctx.device)}
                block(x.to(ctx.device), **kw)
                outs.append(store[0])
        return outs

    with eager_attention(model):
        dense = run_attention()
        scores, solutions = {}, {}
        for role in ("q", "k", "v"):
            for n in attn_linears:
                solver = "d2-wanda" if n == qkv[role] else "d2-sparsegpt"
                key = (n, solver)
                if key not in solutions:
                    solutions[key] = solve_linear(solver, originals[n], stats[n], cfg)
                linears[n].weight.data.copy_(solutions[key][0].to(linears[n].weight.dtype))
            cand = run_attention()
            err = sum(float((c[0] - d[0]).pow(2).sum()) for c, d in zip(cand, dense)) / \
                sum(float(d[0].pow(2).sum()) for d in dense)
            kl = sum(float(attention_kl(c[1], d[1]).mean()) for c, d in zip(cand, dense)) / len(dense)
            scores[role] = {"rel_error": err, "kl": kl, "objective": err + cfg.rho * kl}
            for n in attn_linears:
                linears[n].weight.data.copy_(originals[n])
    role = min(scores, key=lambda r: scores[r]["objective"])
    log.append({"block": ctx.index, "scores": scores, "chosen": role})
    return {role}


@dataclass
class FrozenPolicy:
    """A per-block frozen-projection policy for the engine: `choose(BlockContext)` returns the roles to freeze
    in that block, and `log` keeps what it measured (it lands in the report's `selector_log`)."""
    name: str
    choose: Callable
    log: list = field(default_factory=list)


def block_policy(cfg, model) -> FrozenPolicy:
    """auto:outlier or auto:kl as a per-block policy (auto:ppl chooses for the whole model: `choose_by_val_ppl`)."""
    from ..models import get_adapter
    adapter = get_adapter(model)
    if adapter.row_groups(adapter.blocks(model)[0]):
        raise PruneError(f"{cfg.frozen} does not yet handle a fused qkv projection ({adapter.model_type}); "
                         "give --frozen q|k|v|none|all")
    if cfg.frozen == "auto:outlier":
        policy = FrozenPolicy(cfg.frozen, None)
        policy.choose = lambda ctx: choose_by_outlier(ctx, policy.log)
        return policy
    if cfg.frozen == "auto:kl":
        causal, policy = adapter.kind == "decoder", FrozenPolicy(cfg.frozen, None)
        policy.choose = lambda ctx: choose_by_kl(ctx, policy.log, model, causal)
        return policy
    raise PruneError(f"no per-block policy for --frozen {cfg.frozen}")


def choose_by_val_ppl(model, cfg, tokenizer, samples, progress, prune_with):
    """auto:ppl: three full prunings with `prune_with` (the engine's run_pruning) freezing q, k and v in turn,
    each scored on the calibration text's val split; the best is kept in `model`."""
    from ..data import eval_windows, parse_name
    from ..evaluate import perplexity
    if tokenizer is None:
        raise PruneError("auto:ppl needs a tokenizer (it is for language models)")
    name, _ = parse_name(cfg.calib, "calib")
    if name.endswith(".txt"):
        raise PruneError("auto:ppl needs a calibration text with a val split (wiki, news, c4, wikitext2)")
    val_spec = f"{name}:val"
    val = eval_windows(tokenizer, val_spec, min(cfg.seqlen, 512), 8)
    t0 = time.perf_counter()
    results, best = {}, None
    for role in ("q", "k", "v"):
        trial = copy.deepcopy(model)
        rep = prune_with(trial, dataclasses.replace(cfg, frozen=role), tokenizer, samples, progress=progress)
        results[role] = perplexity(trial, val.ids, progress=False)
        if best is None or results[role] < results[best[0]]:
            best = (role, trial, rep)
        else:
            del trial
    role, trial, report = best
    model.load_state_dict(trial.state_dict())
    report.selector_seconds = time.perf_counter() - t0 - report.prune_seconds
    report.config["frozen"] = "auto:ppl"
    report.selector_log = {"validation": val.describe(), "val_ppl": results, "chosen": role}
    return report

