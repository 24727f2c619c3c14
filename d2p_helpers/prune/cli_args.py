"""`d2p prune` flags generated from PruneConfig's fields, and back: each default is written once (config.py)."""
from __future__ import annotations

from dataclasses import MISSING, fields

from .config import PruneConfig

EVAL_SEQLEN = 1024    # `d2p eval`/`prune` evaluation windows when neither --eval-seqlen nor --seqlen is given


def _flag(f) -> str:
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


def cli_fields():
    """The PruneConfig fields that are `d2p prune` flags of their own."""
    return [f for f in fields(PruneConfig) if f.metadata.get("cli", True)]


def add_prune_args(p) -> None:
    from .methods import METHODS_BY_NAME
    p.add_argument("--method", required=True, metavar="METHOD",
                   help="; ".join(f"{m.name}: {m.summary}" for m in METHODS_BY_NAME.values()))
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sparsity", type=float, help=PruneConfig.__dataclass_fields__["sparsity"].metadata["help"])
    g.add_argument("--pattern", help=PruneConfig.__dataclass_fields__["pattern"].metadata["help"])
    for f in cli_fields():
        help_ = f.metadata["help"] + (f" (default {f.default})" if f.default not in (None, False) else "")
        if f.type in ("bool", bool):
            p.add_argument(_flag(f), dest=f"cfg_{f.name}", action="store_true", help=help_)
            continue
        kind = {"int": int, "float": float}.get(str(f.type), str)
        p.add_argument(_flag(f), dest=f"cfg_{f.name}", type=kind, default=None, choices=f.metadata.get("choices"),
                       help=help_)
    p.add_argument("--auto-s", action="store_true", help="s = the calibration seqlen (paper Appendix B.4)")
    p.add_argument("--save", help="write the pruned model as a HF folder")
    p.add_argument("--compress", choices=["2:4"], help="with --save: packed 2:4 format (d2p_helpers.compress.load_compressed)")


def options_from_args(args) -> dict:
    """Validated keyword arguments for `prune()` (only what the command line set; the rest are PruneConfig's
    defaults); raises PruneError before any work."""
    opts = {"method": args.method, "sparsity": args.sparsity, "pattern": args.pattern, "seed": args.seed,
            "device": args.device}
    for f in cli_fields():
        value = getattr(args, f"cfg_{f.name}")
        if value is not None and value is not False:
            opts[f.name] = value
    if "seqlen" not in opts and args.seqlen is not None:      # --seqlen sets both lengths
        opts["seqlen"] = args.seqlen
    if args.auto_s:
        opts["s"] = float(opts.get("seqlen", PruneConfig.seqlen))
    PruneConfig(**opts).validate()
    return opts


def setting_flags(setting: str) -> list[str]:
    """A benchmark setting as `d2p prune` flags: "0.6" -> --sparsity 0.6, "2:4" -> --pattern 2:4."""
    from . import setting_kwargs
    return [x for k, v in setting_kwargs(setting).items() for x in (f"--{k}", str(v))]


def option_flags(options: dict) -> list[str]:
    """PruneConfig options as `d2p prune` flags: the exact command a record can be rerun with."""
    by_name = {f.name: f for f in fields(PruneConfig)}
    flags = []
    for name, value in sorted(options.items()):
        f = by_name[name]
        if not f.metadata.get("cli", True):
            raise ValueError(f"option {name} is not a `d2p prune` flag of its own")
        if isinstance(value, bool):
            flags += [_flag(f)] if value else []
        else:
            flags += [_flag(f), f"{value:g}" if isinstance(value, float) else str(value)]
    return flags


def config_defaults() -> dict:
    return {f.name: f.default for f in fields(PruneConfig) if f.default is not MISSING}
