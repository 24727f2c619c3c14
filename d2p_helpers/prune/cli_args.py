"""`d2p prune` options, and their translation into `prune()` keyword arguments."""
from __future__ import annotations


def add_prune_args(p) -> None:
    from .config import LAYER_SPARSITY, METHODS, RECONSTRUCT, REFINE
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sparsity", type=float, help="unstructured fraction pruned, in [0, 1)")
    g.add_argument("--pattern", help="N:M, N zeros in every M consecutive inputs (2:4, 4:8)")
    p.add_argument("--calib", default="news", help="calibration text (news, wiki, c4, file.txt)")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--r1", type=float, default=1.0, help="lambda1, weight of the y|W|x term")
    p.add_argument("--r2", type=float, default=0.0, help="lambda2 magnitude, applied with a minus sign")
    p.add_argument("--s", type=float, default=1500.0, help="activation scale s (paper: 1500)")
    p.add_argument("--auto-s", action="store_true", help="s = seqlen (paper Appendix B.4)")
    p.add_argument("--frozen", default=None,
                   help="d2prune: q|k|v|none|all|auto:ppl|auto:kl|auto:outlier (default k for OPT, v otherwise)")
    p.add_argument("--d2-norm", default="authors", choices=["authors", "mean"],
                   help="authors: k/N-weighted sums / s (released code); mean: N- and L-independent")
    p.add_argument("--rho", type=float, default=1.0, help="auto:kl weight of the attention KL")
    p.add_argument("--outlier-def", default="score", help="auto:outlier definition: score|weight|weight3")
    p.add_argument("--blocksize", type=int, default=128)
    p.add_argument("--percdamp", type=float, default=0.01)
    p.add_argument("--calib-batch-size", type=int, default=1)
    p.add_argument("--track-error", default="auto", choices=["auto", "yes", "no"],
                   help="per-linear reconstruction error; auto: where the Gram matrix is built anyway (OBS solvers)")
    p.add_argument("--layer-sparsity", default="uniform", choices=LAYER_SPARSITY,
                   help="owl: per-block sparsity from outlier ratios (Yin et al. 2024); unstructured only")
    p.add_argument("--owl-m", type=float, default=5.0, help="OWL: outlier = Wanda score > M x layer mean")
    p.add_argument("--owl-lambda", type=float, default=0.08, help="OWL: block sparsity within target ± lambda")
    p.add_argument("--refine", default="none", choices=REFINE,
                   help="mask refinement after selection: dsnot (Zhang et al. 2024) or Gram-matrix swaps")
    p.add_argument("--refine-iters", type=int, default=50, help="refinement cycles per linear")
    p.add_argument("--reconstruct", default="none", choices=RECONSTRUCT,
                   help="least-squares kept weights once the mask is final: exact (a Cholesky per row) or cg "
                        "(preconditioned conjugate gradient from the stage's input, all rows at once)")
    p.add_argument("--reconstruct-iters", type=int, default=20, help="cg: steps per linear")
    p.add_argument("--reconstruct-frozen", action="store_true",
                   help="d2prune: reconstruct the frozen projection too (default: it stays un-updated)")
    p.add_argument("--ria-a", type=float, default=0.5, help="RIA: exponent of the input norm")
    p.add_argument("--permute", action="store_true", help="RIA with N:M: channel permutation first")
    p.add_argument("--save", help="write the pruned model as a HF folder")
    p.add_argument("--compress", choices=["2:4"], help="with --save: packed 2:4 format (d2p_helpers.compress.load_compressed)")


def options_from_args(args) -> dict:
    """Validated keyword arguments for `prune()`; raises PruneError before any work."""
    from .config import PruneConfig
    opts = dict(method=args.method, sparsity=args.sparsity, pattern=args.pattern, calib=args.calib,
                nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed, r1=args.r1, r2=args.r2,
                s=float(args.seqlen) if args.auto_s else args.s, frozen=args.frozen, d2_norm=args.d2_norm,
                rho=args.rho, outlier_def=args.outlier_def, blocksize=args.blocksize, percdamp=args.percdamp,
                batch_size=args.calib_batch_size, track_error={'auto': None, 'yes': True, 'no': False}[args.track_error],
                device=args.device, layer_sparsity=args.layer_sparsity, owl_m=args.owl_m,
                owl_lambda=args.owl_lambda, refine=args.refine, refine_iters=args.refine_iters,
                reconstruct=args.reconstruct, reconstruct_iters=args.reconstruct_iters,
                reconstruct_frozen=args.reconstruct_frozen, ria_a=args.ria_a,
                permute=args.permute)
    PruneConfig(**opts).validate()
    return opts


def setting_flags(setting: str) -> list[str]:
    """A benchmark setting as `d2p prune` flags: "0.6" -> --sparsity 0.6, "2:4" -> --pattern 2:4."""
    from . import setting_kwargs
    return [x for k, v in setting_kwargs(setting).items() for x in (f"--{k}", str(v))]


def option_flags(options: dict) -> list[str]:
    """PruneConfig options (non-default ones) as `d2p prune` flags: the exact command a record can be rerun with."""
    renamed = {"batch_size": "calib-batch-size"}
    flags = []
    for name, value in sorted(options.items()):
        flag = "--" + renamed.get(name, name.replace("_", "-"))
        if name == "track_error":
            flags += [flag, {None: "auto", True: "yes", False: "no"}[value]]
        elif isinstance(value, bool):
            flags += [flag] if value else []
        else:
            flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return flags
