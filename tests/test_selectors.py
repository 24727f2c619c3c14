"""q/k/v selectors: valid per-layer choices, Eq. 12 with rho = 0 is the error argmin, no peeking at test text."""
import pytest

from conftest import tiny
from d2p_helpers import data
from d2p_helpers.prune import PruneError, prune
from d2p_helpers.prune.selectors import outlier_ratio


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-opt"])
@pytest.mark.parametrize("selector", [pytest.param("auto:ppl", marks=pytest.mark.slow), "auto:kl", "auto:outlier"])
def test_selector_gives_a_valid_choice_per_block(name, selector):
    model, tok = tiny(name)
    rep = prune(model, "d2prune", sparsity=0.5, nsamples=4, seqlen=64, tokenizer=tok, frozen=selector, progress=False)
    assert len(rep.frozen_per_block) == model.config.num_hidden_layers
    assert all(c in ("q", "k", "v") for c in rep.frozen_per_block)
    frozen_rows = [r for r in rep.per_linear if r["solver"] == "d2-wanda"]
    assert [r["name"].split(".")[-1][0] for r in frozen_rows] == rep.frozen_per_block
    if selector == "auto:ppl":
        assert len(set(rep.frozen_per_block)) == 1 and rep.selector_seconds > 0
        assert rep.selector_log["validation"]["source"] == "news:val"


def test_auto_kl_with_rho_zero_picks_lowest_reconstruction_error():
    model, tok = tiny("tiny-llama", seed=1)
    rep = prune(model, "d2prune", sparsity=0.6, nsamples=4, seqlen=64, tokenizer=tok, frozen="auto:kl", rho=0.0,
                progress=False)
    for entry in rep.selector_log:
        errs = {r: s["rel_error"] for r, s in entry["scores"].items()}
        assert entry["chosen"] == min(errs, key=errs.get)
        assert all(s["kl"] >= 0 for s in entry["scores"].values())


def test_outlier_definitions_differ_as_the_spec_says():
    import torch
    w = torch.randn(256, 256)
    assert 0.35 < outlier_ratio(w, None, None, "weight") < 0.45     # Eq. 18 as printed: ~42% for Gaussian weights
    assert 0.01 < outlier_ratio(w, None, None, "weight3") < 0.03   # P(|w| > 2.39 sigma) = 1.7%
    with pytest.raises(PruneError):
        outlier_ratio(w, None, None, "nonsense")


@pytest.mark.parametrize("selector", [pytest.param("auto:ppl", marks=pytest.mark.slow), "auto:kl", "auto:outlier"])
def test_selectors_never_read_the_evaluation_text(monkeypatch, selector):
    """Every text the selectors load is recorded: only the calibration text's calib and val splits appear.
    Replacing the whole evaluation text (wiki test) with garbage cannot change the choice."""
    seen = []
    real = data.load_text

    def spy(spec, default_split="test"):
        name, split = data.parse_name(spec, default_split)
        seen.append((name, split))
        if name == "wiki" and split == "test":
            return "zzzz " * 5000          # an evaluation text that would change any choice made on it
        return real(spec, default_split)
    monkeypatch.setattr(data, "load_text", spy)
    model, tok = tiny("tiny-llama")
    rep = prune(model, "d2prune", sparsity=0.5, nsamples=4, seqlen=64, tokenizer=tok, frozen=selector, progress=False)
    assert all(name == "news" and split in ("calib", "val") for name, split in seen), seen
    assert rep.frozen_per_block


def test_auto_ppl_needs_a_text_with_a_validation_split(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("some calibration words " * 400)
    model, tok = tiny("tiny-llama")
    with pytest.raises(PruneError, match="val split"):
        prune(model, "d2prune", sparsity=0.5, nsamples=2, seqlen=32, tokenizer=tok, calib=str(f), frozen="auto:ppl",
              progress=False)


def test_a_policy_is_the_one_seam_between_the_engine_and_the_q_k_v_choice():
    """A policy written outside the package plugs in the way auto:kl and auto:outlier do: it reads each
    block's typed context, its choice is what the engine freezes, and its log lands in the report."""
    from d2p_helpers.prune import PruneConfig, run_pruning
    from d2p_helpers.prune.selectors import FrozenPolicy
    model, tok = tiny("tiny-llama")
    seen = []

    def alternate(ctx):
        seen.append((ctx.index, sorted(ctx.qkv), ctx.attention_path, ctx.cfg.sparsity))
        role = "kv"[ctx.index % 2]
        policy.log.append({"block": ctx.index, "chosen": role})
        return {role}

    policy = FrozenPolicy("alternate", alternate)
    cfg = PruneConfig(method="d2prune", sparsity=0.5, nsamples=4, seqlen=64)
    rep = run_pruning(model, cfg, tok, progress=False, policy=policy)
    n = model.config.num_hidden_layers
    assert [s[0] for s in seen] == list(range(n)) and all(s[1] == ["k", "q", "v"] for s in seen)
    assert rep.frozen_per_block == ["kv"[i % 2] for i in range(n)]
    assert rep.selector_log == policy.log and "selector_log" not in rep.config
    frozen_rows = [r["name"].split(".")[-1][0] for r in rep.per_linear if r["frozen"]]
    assert frozen_rows == rep.frozen_per_block
