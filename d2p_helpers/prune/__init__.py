"""Post-training pruning behind one entry point: `prune(model, method=..., ...) -> PruneReport`."""
from __future__ import annotations

from .config import PruneConfig, PruneError
from .engine import PruneReport, run_pruning, save_pruned
from .methods import METHODS


def setting_kwargs(setting: str) -> dict:
    """A benchmark setting as prune() arguments: "0.6" -> sparsity 0.6, "2:4" -> pattern "2:4"."""
    return {"pattern": setting} if ":" in setting else {"sparsity": float(setting)}


def prune(model, method: str | None = None, cfg: PruneConfig | None = None, *, tokenizer=None, samples=None,
          progress: bool = True, **overrides) -> PruneReport:
    """Prune `model` in place, block by block. `cfg` (default: PruneConfig()'s defaults) with `method` and any
    PruneConfig field given as a keyword on top: `prune(model, "wanda", sparsity=0.5)`."""
    from dataclasses import asdict
    unknown = set(overrides) - set(PruneConfig.__dataclass_fields__)
    if unknown:
        raise PruneError(f"unknown option(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(set(PruneConfig.__dataclass_fields__) - {'method'}))}")
    fields = {**(asdict(cfg) if cfg is not None else {}), **({"method": method} if method else {}), **overrides}
    return run_pruning(model, PruneConfig(**fields), tokenizer=tokenizer, samples=samples, progress=progress)


__all__ = ["prune", "setting_kwargs", "METHODS", "PruneConfig", "PruneError", "PruneReport", "save_pruned"]
