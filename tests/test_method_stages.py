"""Every method × every stage: the stage runs (its error before and after in every row it touches) or the
request is refused with one line; never a stage silently skipped. Reads the method registry, so a new method
or stage is enumerated without editing this test."""
import copy

import pytest

from d2p_helpers.prune import PruneError, prune
from d2p_helpers.prune.config import RECONSTRUCT, REFINE
from d2p_helpers.prune.methods import METHODS, METHODS_BY_NAME, SOLVERS

STAGES = ([("refine", {"refine": r}) for r in REFINE if r != "none"]
          + [("reconstruct", {"reconstruct": r}) for r in RECONSTRUCT if r != "none"]
          + [("reconstruct", {"reconstruct": r, "reconstruct_target": "dense"}) for r in RECONSTRUCT if r != "none"]
          + [("correct", {"correct": "scale"}), ("layer_sparsity", {"layer_sparsity": "owl"}),
             ("sequential", {"sequential": True}), ("block_tune", {"block_tune": 4, "nsamples": 8}),
             ("calib", {"calib": "news+self"})])


@pytest.fixture(scope="module")
def tiny_llama():
    from d2p_helpers.models import load_model
    return load_model("tiny-llama")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("stage", STAGES, ids=[",".join(f"{k}={v}" for k, v in kw.items()) for _, kw in STAGES])
def test_each_stage_runs_or_is_refused(method, stage, tiny_llama):
    model, tok = copy.deepcopy(tiny_llama[0]), tiny_llama[1]
    key, stage_kwargs = stage
    kwargs = {**dict(sparsity=0.5, nsamples=2, seqlen=32, progress=False), **stage_kwargs}
    if not METHODS_BY_NAME[method].uses_data:
        with pytest.raises(PruneError) as exc:
            prune(model, method, tokenizer=tok, **kwargs)
        assert "uses no calibration data" in str(exc.value) and "\n" not in str(exc.value)
        return
    if key == "calib":                          # the mixture is drawn, recorded and used
        report = prune(model, method, tokenizer=tok, **kwargs)
        assert report.calibration["source"] == "news+self" and report.calibration["self_generated"]["seed"] == 0
        assert report.calibration["windows"] == 2 and len(report.calibration["ids_sha1"]) == 16
        return
    report = prune(model, method, tokenizer=tok, **kwargs)
    rows = report.per_linear
    assert rows and abs(report.achieved_sparsity - 0.5) < 0.02
    if key == "layer_sparsity":
        assert "owl" in report.stage_seconds and len(set(report.block_sparsity)) > 1
        return
    if key == "sequential":
        assert {r["group"] for r in rows} == {0, 1, 2, 3} and report.stage_seconds["sequential"] > 0
        return
    if key == "block_tune":
        assert [b["block"] for b in report.block_tune] == [0, 1] and report.stage_seconds["block_tune"] > 0
        assert all(b["held_error_after"] <= b["held_error_before"] for b in report.block_tune)
        return
    if stage_kwargs.get("reconstruct_target") == "dense":
        assert all(r["error_target"] == "dense" for r in rows)
    for row in rows:
        if key == "reconstruct" and row["frozen"]:
            assert "reconstruct_skipped" in row                  # said, not silent
            continue
        assert row[f"{key}_error_before"] is not None and row[f"{key}_error_after"] is not None, (method, row)
        assert row[f"{key}_seconds"] >= 0
    assert report.stage_seconds[key] > 0


def test_d2_wanda_reconstructs_every_linear():
    """The bug the registry fixed: d2-wanda's units are not frozen projections, so reconstruction runs on all."""
    from d2p_helpers.models import load_model
    model, tok = load_model("tiny-llama")
    report = prune(model, "d2-wanda", sparsity=0.5, nsamples=2, seqlen=32, reconstruct="exact", progress=False,
                   tokenizer=tok)
    assert all("reconstruct_error_after" in r and not r["frozen"] for r in report.per_linear)
    assert all(r["reconstruct_error_after"] <= r["reconstruct_error_before"] + 1e-6 for r in report.per_linear)


def test_registry_is_consistent():
    for name, m in METHODS_BY_NAME.items():
        assert m.solver in SOLVERS and (m.frozen_solver is None or m.frozen_solver in SOLVERS), name
    assert METHODS_BY_NAME["d2prune"].unit_solver(True) == "d2-wanda"
    assert METHODS_BY_NAME["d2-wanda"].unit_solver(True) == "d2-wanda"
    assert not METHODS_BY_NAME["d2-wanda"].frozen_solver      # so none of its units is a frozen projection


def test_cli_and_prune_agree_on_every_default():
    """`d2p prune` with only the required flags asks PruneConfig's defaults, field by field."""
    from dataclasses import asdict
    from d2p_helpers.cli import build_parser
    from d2p_helpers.prune.cli_args import options_from_args
    from d2p_helpers.prune.config import PruneConfig
    args = build_parser().parse_args(["prune", "--model", "tiny-llama", "--method", "wanda", "--sparsity", "0.5"])
    from_cli = asdict(PruneConfig(**options_from_args(args)))
    defaults = asdict(PruneConfig(method="wanda", sparsity=0.5, device="cpu"))
    assert from_cli == defaults
    assert from_cli["seqlen"] == PruneConfig.seqlen


def test_seqlen_sets_both_lengths_and_each_has_its_own_flag():
    from d2p_helpers.cli import _check_common, build_parser
    from d2p_helpers.prune.cli_args import options_from_args
    base = ["prune", "--model", "tiny-llama", "--method", "wanda", "--sparsity", "0.5"]
    both = build_parser().parse_args(base + ["--seqlen", "64"])
    _check_common(both)
    assert both.eval_seqlen == 64 and options_from_args(both)["seqlen"] == 64
    apart = build_parser().parse_args(base + ["--calib-seqlen", "32", "--eval-seqlen", "128"])
    _check_common(apart)
    assert apart.eval_seqlen == 128 and options_from_args(apart)["seqlen"] == 32


def test_option_flags_round_trip_through_the_parser():
    """Every CLI field, set to a non-default value, comes back from the generated flags unchanged."""
    from dataclasses import fields
    from d2p_helpers.cli import build_parser
    from d2p_helpers.prune.cli_args import cli_fields, option_flags
    from d2p_helpers.prune.config import PruneConfig
    odd = {"calib": "wiki", "nsamples": 7, "seqlen": 48, "r1": 0.5, "r2": 0.25, "s": 99.0, "frozen": "q",
           "d2_norm": "mean", "rho": 2.0, "outlier_def": "weight", "blocksize": 64, "percdamp": 0.02,
           "batch_size": 2, "track_error": "yes", "layer_sparsity": "owl", "owl_m": 3.0, "owl_lambda": 0.05,
           "refine": "dsnot", "refine_iters": 5, "reconstruct": "cg", "reconstruct_iters": 3,
           "reconstruct_frozen": True, "reconstruct_target": "dense", "sequential": True, "block_tune": 9,
           "block_tune_lr": 0.002, "block_tune_batch": 3, "block_tune_holdout": 0.25, "correct": "scale",
           "ria_a": 0.25, "permute": True}
    assert set(odd) == {f.name for f in cli_fields()}, "a new field needs a value here"
    args = build_parser().parse_args(["prune", "--model", "m", "--method", "d2prune", "--sparsity", "0.5",
                                      *option_flags(odd)])
    got = {k: v for k, v in vars(args).items() if k.startswith("cfg_")}
    assert {k[4:]: v for k, v in got.items()} == odd
    assert {f.name for f in fields(PruneConfig)} >= set(odd)
