"""Post-training pruning behind one entry point: `prune(model, method=..., ...) -> PruneReport`."""
from __future__ import annotations

from .config import METHODS, PruneConfig, PruneError
from .engine import PruneReport, save_pruned


def setting_kwargs(setting: str) -> dict:
    """A benchmark setting as prune() arguments: "0.6" -> sparsity 0.6, "2:4" -> pattern "2:4"."""
    return {"pattern": setting} if ":" in setting else {"sparsity": float(setting)}


def prune(model, method: str = "d2prune", sparsity: float | None = None, pattern: str | None = None,
          calib: str = "news", nsamples: int = 128, seqlen: int = 2048, seed: int = 0, tokenizer=None,
          samples=None, progress: bool = True, **options) -> PruneReport:
    """Prune `model` in place, block by block; options are PruneConfig's fields (r1, r2, s, frozen, d2_norm,
    layer_sparsity, refine, reconstruct, ...)."""
    unknown = set(options) - set(PruneConfig.__dataclass_fields__)
    if unknown:
        raise PruneError(f"unknown option(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(set(PruneConfig.__dataclass_fields__) - {'method'}))}")
    cfg = PruneConfig(method=method, sparsity=sparsity, pattern=pattern, calib=calib, nsamples=nsamples,
                      seqlen=seqlen, seed=seed, **options)
    from .selectors import run_with_selector
    return run_with_selector(model, cfg, tokenizer=tokenizer, samples=samples, progress=progress)


__all__ = ["prune", "setting_kwargs", "METHODS", "PruneConfig", "PruneError", "PruneReport", "save_pruned"]
