"""The D² term's strength: the authors' accumulation grows with N; the normalised one does not."""
import pytest
import torch

from d2p_helpers.calibration import LinearStats
from d2p_helpers.prune.engine import PruneConfig, solve_linear


def _stats(X, W):
    st = LinearStats(X.shape[-1], W.shape[0], "cpu", gram=True, d2=True)
    for x in X:                      # one sample at a time, like the calibration loop
        st.add(x[None], x[None] @ W.t())
    return st


def test_doubling_n_keeps_normalised_masks_and_moves_the_authors_ones():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(96, 128, generator=g)
    X = torch.randn(8, 32, 128, generator=g) * (torch.rand(128, generator=g) * 3 + 0.1)
    once, twice = _stats(X, W), _stats(torch.cat([X, X]), W)     # same text, windows repeated

    def masks(st, norm):
        cfg = PruneConfig(method="d2prune", sparsity=0.5, r1=1.0, s=20.0, d2_norm=norm)
        return {solver: solve_linear(solver, W, st, cfg)[0] == 0 for solver in ("d2-sparsegpt", "d2-wanda")}

    # normalised statistics are identical (to rounding), so every mask is unchanged
    for path in ("update", "frozen"):
        a, b = once.d2_stats(20.0, path, "mean"), twice.d2_stats(20.0, path, "mean")
        assert all(torch.allclose(u, v, rtol=1e-5) for u, v in zip(a, b))
    m1, m2 = masks(once, "mean"), masks(twice, "mean")
    assert all(torch.equal(m1[k], m2[k]) for k in m1)

    # the authors' k/N-weighted sums roughly double with N, and the masks change
    y1, _ = once.d2_stats(20.0, "frozen", "authors")
    y2, _ = twice.d2_stats(20.0, "frozen", "authors")
    assert 1.8 < float((y2 / y1).mean()) < 2.2
    a1, a2 = masks(once, "authors"), masks(twice, "authors")
    assert any(not torch.equal(a1[k], a2[k]) for k in a1)


def test_normalised_equals_authors_scale_at_the_reference_n():
    """At N = 128 with equal per-sample norms the two conventions give the same frozen-path statistics."""
    W = torch.randn(16, 32)
    x = torch.randn(1, 8, 32)
    st = _stats(x.repeat(128, 1, 1), W)
    for path in ("update", "frozen"):
        ya, xa = st.d2_stats(1500.0, path, "authors")
        ym, xm = st.d2_stats(1500.0, path, "mean")
        assert torch.allclose(ya, ym, rtol=1e-4) and torch.allclose(xa, xm, rtol=1e-4)


@pytest.mark.slow
def test_study_runs_spelled_with_defaults_share_one_cache_entry(tmp_path):
    """lambda=(1, 0), s=1500 and the authors' N study at the default N are the same run: one cache file."""
    from studies.hparams import hparam_study
    from studies.runs import canonical_options
    assert canonical_options({"r1": 1.0, "r2": 0.0, "s": 1500.0, "d2_norm": "authors", "frozen": "v"}) == {"frozen": "v"}
    assert canonical_options({"r1": 0.5, "d2_norm": "mean"}) == {"r1": 0.5, "d2_norm": "mean"}
    assert str(canonical_options({"r1": 0, "r2": 1})) == str(canonical_options({"r1": 0.0, "r2": 1.0}))
    base = {"model": "tiny-llama", "calib": "news", "nsamples": 2, "seqlen": 32, "eval": ["wiki"], "eval_windows": 1}
    st = hparam_study(base, [0], [0.0, 1.0], [1500, "auto"], [2], [0.5], tmp_path)
    # lambda grid 4 runs (one of them the default) + auto + N=2 mean (= auto): 5 distinct runs
    assert len(list(tmp_path.glob("*.json"))) == 5
    default = next(r for r in st["lambda"] if r["r1"] == 1.0 and r["r2"] == 0.0)["ppl"]
    assert default == next(r for r in st["s"] if r["s"] == 1500)["ppl"] == st["nsamples"][0]["ppl"]
    assert next(r for r in st["s"] if r["s"] == "auto")["ppl"] == st["nsamples"][1]["ppl"]
    # cached_only reads the same numbers and leaves out what was never run
    again = hparam_study(base, [0, 1], [0.0, 1.0], [1500, "auto"], [2], [0.5], tmp_path, cached_only=True)
    assert again["lambda"] == st["lambda"] and len(list(tmp_path.glob("*.json"))) == 5


def test_knob_effect_reads_each_rows_seeds():
    from studies.hparams import knob_effect
    flat = [{"ppl": [100 + d, 100 - d], "seeds": [0, 1]} for d in (5, 3, 4, 6)]      # same mean: seed noise only
    steep = [{"ppl": [m + 1, m - 1.2], "seeds": [0, 1]} for m in (100, 130, 160, 190)]
    assert knob_effect(flat).endswith("within seed noise") and "100.00–100.00" in knob_effect(flat)
    assert knob_effect(steep).endswith("beyond seed noise") and "(90% of the best)" in knob_effect(steep)
    assert knob_effect([{"ppl": [1.0], "seeds": [0]}, {"ppl": [2.0], "seeds": [0]}]).startswith("too few")
