"""What a pruning run is asked to do: the config, every choice it accepts, and its validation.

A leaf module (it imports nothing else of the package but `masks` and `checks`): the engine, the solvers, the
selectors and the CLI all read their choices from here, and `PruneConfig.validate` is the one place
that says what a valid request is."""
from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..checks import InputError
from ..masks import parse_pattern

METHODS = ("magnitude", "wanda", "sparsegpt", "d2-sparsegpt", "d2-wanda", "d2prune", "ria")
# The solver of one linear is named after the method that uses it everywhere: d2prune prunes its frozen
# projection(s) with the d2-wanda solver (no update) and every other linear with the d2-sparsegpt solver.
SOLVERS = ("magnitude", "wanda", "sparsegpt", "d2-sparsegpt", "d2-wanda", "ria")
FROZEN_CHOICES = ("q", "k", "v", "none", "all")
SELECTORS = ("auto:ppl", "auto:kl", "auto:outlier")
OUTLIER_DEFS = ("score", "weight", "weight3")
D2_NORMS = ("authors", "mean")
LAYER_SPARSITY = ("uniform", "owl")
REFINE = ("none", "dsnot", "swap")
RECONSTRUCT = ("none", "exact", "cg")


class PruneError(InputError):
    """Invalid pruning request; raised before any work is done."""


@dataclass(frozen=True)
class D2Terms:
    """The D² add-on to a score: r1 * y_i |W_ij| x_j - r2 * W_ij^2 x_j^2, with y, x scaled by s (paper: λ₁, λ₂)."""
    r1: float = 1.0
    r2: float = 0.0
    s: float = 1500.0
    norm: str = "authors"

    @property
    def active(self) -> bool:
        return bool(self.r1 or self.r2)


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
    track_error: bool | None = None   # None: only where the Gram matrix is built anyway
    device: str | None = None
    layer_sparsity: str = "uniform"   # uniform | owl (Yin et al. 2024)
    owl_m: float = 5.0                # OWL: outlier = score > M x the layer mean
    owl_lambda: float = 0.08          # OWL: per-block sparsity within target ± lambda
    refine: str = "none"              # none | dsnot | swap: mask refinement after selection
    refine_iters: int = 50            # DSnoT cycles / swap rounds per linear
    reconstruct: str = "none"         # none | exact | cg: least-squares kept weights once the mask is final
    reconstruct_iters: int = 20       # cg: preconditioned conjugate-gradient steps (results/reconstruct.md)
    reconstruct_frozen: bool = False  # exact reconstruction of D²Prune's frozen projection too
    ria_a: float = 0.5                # RIA: exponent of the activation norm
    permute: bool = False             # RIA with N:M: channel permutation before selection

    @property
    def nm(self):
        return parse_pattern(self.pattern)

    @property
    def d2(self) -> D2Terms:
        return D2Terms(self.r1, self.r2, self.s, self.d2_norm)

    @property
    def stages(self) -> bool:
        """Any stage beyond the method's own score and update."""
        return self.layer_sparsity != "uniform" or self.refine != "none" or self.reconstruct != "none"

    def validate(self) -> None:
        def choice(name, value, options):
            if value not in options:
                raise PruneError(f"{name} must be one of {', '.join(options)}, got '{value}'")

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
        if self.blocksize < 1:
            raise PruneError(f"blocksize must be >= 1, got {self.blocksize}")
        if not 0 < self.percdamp < 1:
            raise PruneError(f"percdamp must be in (0, 1), got {self.percdamp}")
        if self.batch_size < 1:
            raise PruneError(f"batch_size must be >= 1, got {self.batch_size}")
        try:
            checks.device(self.device)
            if self.calib.endswith(".txt"):
                checks.text(self.calib, "calibration", self.seqlen + 1)
        except InputError as exc:
            raise PruneError(str(exc)) from None
        choice("d2_norm", self.d2_norm, D2_NORMS)
        choice("outlier_def", self.outlier_def, OUTLIER_DEFS)
        if self.frozen is not None:
            choice("frozen", self.frozen, FROZEN_CHOICES + SELECTORS)
            if self.method != "d2prune":
                raise PruneError(f"frozen applies to method d2prune only (got method '{self.method}')")
        choice("layer_sparsity", self.layer_sparsity, LAYER_SPARSITY)
        choice("refine", self.refine, REFINE)
        choice("reconstruct", self.reconstruct, RECONSTRUCT)
        if self.layer_sparsity == "owl":
            if self.nm:
                raise PruneError("layer_sparsity owl is for unstructured sparsity; N:M fixes every block's sparsity")
            if self.owl_m <= 0 or not 0 <= self.owl_lambda < 1:
                raise PruneError(f"OWL needs M > 0 and 0 <= lambda < 1, got M={self.owl_m}, lambda={self.owl_lambda}")
            if not (0 <= self.sparsity - self.owl_lambda and self.sparsity + self.owl_lambda < 1):
                raise PruneError(f"OWL's range sparsity ± lambda must lie in [0, 1), got "
                                 f"{self.sparsity} ± {self.owl_lambda}")
        if self.refine_iters < 0:
            raise PruneError(f"refine_iters must be >= 0, got {self.refine_iters}")
        if self.reconstruct_iters < 1:
            raise PruneError(f"reconstruct_iters must be >= 1, got {self.reconstruct_iters}")
        if self.permute and not (self.method == "ria" and self.nm):
            raise PruneError("permute applies to method ria with an N:M pattern")
        if self.ria_a < 0:
            raise PruneError(f"ria_a must be >= 0, got {self.ria_a}")
        if self.method == "magnitude" and (self.refine != "none" or self.reconstruct != "none"
                                           or self.layer_sparsity != "uniform"):
            raise PruneError("magnitude uses no calibration data; refine, reconstruct and owl need it")
