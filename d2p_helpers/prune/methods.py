"""The method registry: what each pruning method needs and how it solves one linear.

Glossary (the engine's too): a *block* is one transformer layer; a *linear* is one nn.Linear in it; a *unit*
is what is pruned at once (a linear, or one row group of a fused qkv linear); a *solver* prunes one unit
(its score, its mask, its update); a *method* is what the user names: a solver for every unit, except D²Prune,
whose frozen attention projection(s) take another solver (no update). Adding a method is one entry below."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .d2prune import prune_d2_sparsegpt, prune_d2_wanda
from .magnitude import prune_magnitude
from .ria import prune_ria
from .sparsegpt import prune_obs
from .wanda import prune_rows, wanda_score

Solve = Callable[[torch.Tensor, object, object], tuple[torch.Tensor, dict]]   # (W fp32, stats, cfg)


@dataclass(frozen=True)
class Solver:
    """One unit's score, mask and update, and the calibration statistics it reads."""
    name: str
    solve: Solve
    gram: bool          # reads the Gram matrix X Xᵀ (its OBS update builds it anyway)
    d2_stats: bool      # reads the D² accumulators (the linear's output and input norms)
    updates: bool       # changes the kept weights (OBS); False: mask only
    data: bool = True   # needs calibration data at all


@dataclass(frozen=True)
class Method:
    """What the user names: its solver, and for D²Prune the solver of its frozen projection(s)."""
    name: str
    solver: str
    frozen_solver: str | None = None
    summary: str = ""

    def solvers(self) -> list[Solver]:
        return [SOLVERS[s] for s in (self.solver, self.frozen_solver) if s]

    @property
    def needs_gram(self) -> bool:
        return any(s.gram for s in self.solvers())

    @property
    def needs_d2_stats(self) -> bool:
        return any(s.d2_stats for s in self.solvers())

    @property
    def uses_data(self) -> bool:
        return any(s.data for s in self.solvers())

    def unit_solver(self, frozen: bool) -> str:
        return self.frozen_solver if frozen and self.frozen_solver else self.solver


def _solver(name, solve, gram=False, d2_stats=False, updates=False, data=True) -> Solver:
    return Solver(name, solve, gram, d2_stats, updates, data)


SOLVERS: dict[str, Solver] = {s.name: s for s in [
    _solver("magnitude", lambda W, st, c: (prune_magnitude(W, c.sparsity, c.nm), {}), data=False),
    _solver("wanda", lambda W, st, c: (prune_rows(W, wanda_score(W, st.nu()), c.sparsity, c.nm), {})),
    _solver("ria", lambda W, st, c: (prune_ria(W, st.nu(), c.sparsity, c.nm, a=c.ria_a, permute=c.permute), {})),
    _solver("sparsegpt", lambda W, st, c: prune_obs(W, st.hessian(), c.sparsity, c.nm, c.blocksize, c.percdamp),
            gram=True, updates=True),
    _solver("d2-sparsegpt", lambda W, st, c: prune_d2_sparsegpt(W, st, c.sparsity, c.nm, c.d2, c.blocksize,
                                                                c.percdamp), gram=True, d2_stats=True, updates=True),
    _solver("d2-wanda", lambda W, st, c: (prune_d2_wanda(W, st, c.sparsity, c.nm, c.d2), {}), d2_stats=True),
]}

METHODS_BY_NAME: dict[str, Method] = {m.name: m for m in [
    Method("magnitude", "magnitude", summary="|W|, one threshold per linear; no data"),
    Method("wanda", "wanda", summary="|W|·‖X‖ per output row; no update (Sun et al. 2024)"),
    Method("sparsegpt", "sparsegpt", summary="OBS saliency and update, 128-column blocks (Frantar & Alistarh 2023)"),
    Method("d2-sparsegpt", "d2-sparsegpt", summary="SparseGPT with the D² term in its score, on every linear"),
    Method("d2-wanda", "d2-wanda", summary="Wanda's W²ν with the D² term, no update, on every linear"),
    Method("d2prune", "d2-sparsegpt", "d2-wanda",
           summary="D²-SparseGPT, except the frozen attention projection(s): D²-Wanda, not updated (the paper)"),
    Method("ria", "ria", summary="relative importance × activation (Zhang et al. 2024); optional N:M permutation"),
]}
METHODS = tuple(METHODS_BY_NAME)


def solve_linear(solver: str, weight: torch.Tensor, st, cfg) -> tuple[torch.Tensor, dict]:
    """New fp32 weight for one unit by the named solver."""
    from .config import PruneError
    if solver not in SOLVERS:
        raise PruneError(f"unknown solver '{solver}': expected one of {', '.join(SOLVERS)}")
    return SOLVERS[solver].solve(weight.detach().float(), st, cfg)


def unit_plan(method: str, units: list[str], qkv: dict[str, str], frozen: set[str]) -> dict[str, tuple[str, bool]]:
    """(solver, is a frozen projection) for every unit of a block: a frozen projection is a field of the
    unit, never inferred from the solver's name."""
    m = METHODS_BY_NAME[method]
    frozen_names = {qkv[r] for r in frozen} if m.frozen_solver else set()
    return {u: (m.unit_solver(u in frozen_names), u in frozen_names) for u in units}


def solver_plan(method: str, units: list[str], qkv: dict[str, str], frozen: set[str]) -> dict[str, str]:
    """Which solver prunes each unit (the notebooks' view of `unit_plan`)."""
    return {u: s for u, (s, _) in unit_plan(method, units, qkv, frozen).items()}
