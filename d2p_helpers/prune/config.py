"""What a pruning run is asked to do: the config, every choice it accepts, and its validation.

A leaf module (it imports nothing else of the package but `masks` and `checks`): the engine, the solvers, the
selectors and the CLI all read their choices from here, and `PruneConfig.validate` is the one place
that says what a valid request is."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from .. import checks
from ..checks import InputError
from ..masks import parse_pattern

FROZEN_CHOICES = ("q", "k", "v", "none", "all")
SELECTORS = ("auto:ppl", "auto:kl", "auto:outlier")
OUTLIER_DEFS = ("score", "weight", "weight3")
D2_NORMS = ("authors", "mean")
LAYER_SPARSITY = ("uniform", "owl")
REFINE = ("none", "dsnot", "swap")
RECONSTRUCT = ("none", "exact", "cg")
TRACK_ERROR = ("auto", "yes", "no")
RECONSTRUCT_TARGETS = ("own", "dense")
CORRECT = ("none", "scale")


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


def opt(default, help: str, choices=None, flag: str | None = None, cli: bool = True):
    """A PruneConfig field: its default, its help and choices, and its `d2p prune` flag, written once.
    cli=False: the flag is shared with `d2p eval` (seed, device) or spelled otherwise (sparsity, pattern)."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag, "cli": cli})


@dataclass
class PruneConfig:
    """Everything a pruning run is asked; `d2p prune`'s flags, `option_flags` and the studies' specs are
    generated from these fields (d2p_helpers.prune.cli_args), so each default is written here only."""
    method: str = opt("d2prune", "pruning method (d2p_helpers.prune.methods)", cli=False)
    sparsity: float | None = opt(None, "unstructured fraction pruned, in [0, 1)", cli=False)
    pattern: str | None = opt(None, "N:M, N zeros in every M consecutive inputs (2:4, 4:8)", cli=False)
    calib: str = opt("news", "calibration text (news, wiki, c4, file.txt)")
    nsamples: int = opt(128, "calibration windows (paper: 128)")
    seqlen: int = opt(2048, "tokens per calibration window (paper: 2048); --seqlen sets it and --eval-seqlen",
                      flag="calib-seqlen")
    seed: int = opt(0, "calibration sampling seed", cli=False)
    r1: float = opt(1.0, "lambda1, weight of the y|W|x term")
    r2: float = opt(0.0, "lambda2 magnitude, applied with a minus sign")
    s: float = opt(1500.0, "activation scale s (paper: 1500; --auto-s: the calibration seqlen)")
    frozen: str | None = opt(None, "d2prune: q|k|v|none|all|auto:ppl|auto:kl|auto:outlier "
                                   "(default: the model's, k for OPT, v otherwise)")
    d2_norm: str = opt("authors", "authors: k/N-weighted sums / s (released code); mean: N- and L-independent",
                       choices=D2_NORMS)
    rho: float = opt(1.0, "auto:kl weight of the attention KL")
    outlier_def: str = opt("score", "auto:outlier definition", choices=OUTLIER_DEFS)
    blocksize: int = opt(128, "OBS: columns per lazy-update block")
    percdamp: float = opt(0.01, "OBS: damping, fraction of the mean Hessian diagonal")
    batch_size: int = opt(1, "calibration windows per forward pass", flag="calib-batch-size")
    track_error: str = opt("auto", "per-linear reconstruction error; auto: where the Gram matrix is built "
                                   "anyway (OBS solvers and stages)", choices=TRACK_ERROR)
    device: str | None = opt(None, "compute device for the block being pruned", cli=False)
    layer_sparsity: str = opt("uniform", "owl: per-block sparsity from outlier ratios (Yin et al. 2024); "
                                         "unstructured only", choices=LAYER_SPARSITY)
    owl_m: float = opt(5.0, "OWL: outlier = Wanda score > M x the layer mean")
    owl_lambda: float = opt(0.08, "OWL: per-block sparsity within target ± lambda")
    refine: str = opt("none", "mask refinement after selection: dsnot (Zhang et al. 2024) or Gram-matrix swaps",
                      choices=REFINE)
    refine_iters: int = opt(50, "DSnoT cycles / swap rounds per linear")
    reconstruct: str = opt("none", "least-squares kept weights once the mask is final: exact (a Cholesky per "
                                   "row) or cg (preconditioned conjugate gradient, all rows at once)",
                           choices=RECONSTRUCT)
    reconstruct_iters: int = opt(20, "cg: steps per linear (results/reconstruct.md)")
    reconstruct_frozen: bool = opt(False, "d2prune: reconstruct the frozen projection too (default: it stays "
                                          "un-updated)")
    reconstruct_target: str = opt("own", "least squares toward the linear's own output on its inputs (own: "
                                         "min ||(W0 - W)X||) or toward the dense model's (dense: min ||W0 X~ - W X||, "
                                         "X~ the dense model's inputs, carried block by block)",
                                  choices=RECONSTRUCT_TARGETS)
    sequential: bool = opt(False, "within a block, prune q/k/v, then o, then gate/up, then down, each group's "
                                  "statistics from the partly pruned block (GPTQ's true-sequential)")
    block_tune: int = opt(0, "once a block's masks are final, this many Adam steps on its kept weights toward "
                             "the dense model's block output (masks frozen; early stop on held-out windows)")
    block_tune_lr: float = opt(1e-3, "block tuning: Adam learning rate (chosen on held-out calibration windows, "
                                     "results/block_tune_lr.md)")
    block_tune_batch: int = opt(4, "block tuning: calibration windows per step")
    block_tune_holdout: float = opt(0.125, "block tuning: fraction of the windows held out for early stopping")
    correct: str = opt("none", "scale: per-output-channel rescaling of each pruned linear so its output energy "
                               "on the calibration inputs matches the dense model's (zeros stay zero)",
                       choices=CORRECT)
    ria_a: float = opt(0.5, "RIA: exponent of the input norm")
    permute: bool = opt(False, "RIA with N:M: channel permutation before selection")

    @property
    def nm(self):
        return parse_pattern(self.pattern)

    @property
    def d2(self) -> D2Terms:
        return D2Terms(self.r1, self.r2, self.s, self.d2_norm)

    @property
    def stages(self) -> bool:
        """Any stage beyond the method's own score and update."""
        return (self.layer_sparsity != "uniform" or self.refine != "none" or self.reconstruct != "none"
                or self.sequential or self.block_tune > 0 or self.correct != "none")

    @property
    def dense_stream(self) -> bool:
        """Whether the dense model's block inputs are carried beside the pruned model's."""
        return self.reconstruct_target == "dense" or self.block_tune > 0

    def validate(self) -> None:
        def choice(name, value, options):
            if value not in options:
                raise PruneError(f"{name} must be one of {', '.join(options)}, got '{value}'")

        from .methods import METHODS, METHODS_BY_NAME    # the registry (it imports the solvers)
        for f in fields(self):                               # a count given as 50.0 would fail deep in a stage
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise PruneError(f"{f.name} must be a whole number, got {value!r}")
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
            if ".txt" in self.calib or "+" in self.calib or self.calib.startswith("self"):
                checks.text(self.calib, "calibration", self.seqlen + 1)
        except InputError as exc:
            raise PruneError(str(exc)) from None
        choice("d2_norm", self.d2_norm, D2_NORMS)
        choice("track_error", self.track_error, TRACK_ERROR)
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
        choice("reconstruct_target", self.reconstruct_target, RECONSTRUCT_TARGETS)
        choice("correct", self.correct, CORRECT)
        if self.reconstruct_target == "dense" and self.reconstruct == "none":
            raise PruneError("reconstruct_target dense needs reconstruct exact or cg")
        if self.sequential and self.frozen in SELECTORS:
            raise PruneError(f"sequential does not yet compose with frozen {self.frozen} (a per-block selector "
                             "scores q/k/v on one pass of the block); give --frozen q|k|v|none|all")
        if self.block_tune < 0 or self.block_tune_batch < 1 or self.block_tune_lr <= 0:
            raise PruneError(f"block tuning needs steps >= 0, batch >= 1 and lr > 0, got {self.block_tune}, "
                             f"{self.block_tune_batch}, {self.block_tune_lr}")
        if not 0 < self.block_tune_holdout < 1:
            raise PruneError(f"block_tune_holdout must be in (0, 1), got {self.block_tune_holdout}")
        if self.block_tune and self.nsamples * self.block_tune_holdout < 1:
            raise PruneError(f"block tuning holds out {self.block_tune_holdout:g} of {self.nsamples} windows, "
                             "fewer than one; give more nsamples or a larger holdout")
        if self.refine_iters < 0:
            raise PruneError(f"refine_iters must be >= 0, got {self.refine_iters}")
        if self.reconstruct_iters < 1:
            raise PruneError(f"reconstruct_iters must be >= 1, got {self.reconstruct_iters}")
        if self.permute and not (self.method == "ria" and self.nm):
            raise PruneError("permute applies to method ria with an N:M pattern")
        if self.ria_a < 0:
            raise PruneError(f"ria_a must be >= 0, got {self.ria_a}")
        if not METHODS_BY_NAME[self.method].uses_data and self.stages:
            raise PruneError(f"{self.method} uses no calibration data; refine, reconstruct and owl need it")
        if not METHODS_BY_NAME[self.method].uses_data and self.calib != PruneConfig.calib:
            raise PruneError(f"{self.method} uses no calibration data; calib '{self.calib}' would be ignored")
        if self.reconstruct_frozen and (not METHODS_BY_NAME[self.method].frozen_solver or self.reconstruct == "none"):
            raise PruneError("reconstruct_frozen applies to method d2prune with reconstruct exact or cg")
