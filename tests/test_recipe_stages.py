"""Stages beyond the paper: OWL block sparsity, DSnoT / swap mask refinement, exact reconstruction, RIA."""
import pytest
import torch
from conftest import tiny

from d2p_helpers.calibration import LinearStats, capture_block_inputs
from d2p_helpers.masks import is_valid_n_of_m, lowest_per_row
from d2p_helpers.models import get_adapter
from d2p_helpers.prune import PruneError, prune
from d2p_helpers.prune.config import PruneConfig
from d2p_helpers.prune.magnitude import prune_magnitude
from d2p_helpers.prune.owl import block_sparsities, outlier_ratio, owl_block_sparsities
from d2p_helpers.prune.reconstruct import conjugate_gradient, exact
from d2p_helpers.prune.refine import refine, row_errors
from d2p_helpers.prune.ria import prune_ria, ria_permutation, ria_score
from d2p_helpers.prune.sparsegpt import prune_obs
from d2p_helpers.prune.wanda import prune_rows, wanda_score

LAM = 0.08


@pytest.fixture(scope="module")
def samples(tokenizer):
    """Calibration windows tokenised once for the end-to-end runs below (4 x 64 tokens)."""
    from d2p_helpers.prune.engine import calibration_samples
    return calibration_samples(tokenizer, PruneConfig(method="wanda", sparsity=0.5, nsamples=4, seqlen=64))[0]


def _layer(d_out=32, d_in=64, samples=8, tokens=64, mean=1.0, seed=0):
    """Random layer and its statistics; inputs with a per-channel offset and three outlier channels."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g)
    X = torch.randn(samples, tokens, d_in, generator=g) + mean * torch.randn(d_in, generator=g)
    X[..., [c % d_in for c in (3, 17, 40)]] *= 10
    st = LinearStats(d_in, d_out, "cpu", gram=True, d2=False)
    st.add(X, None)
    return W, X.reshape(-1, d_in), st


def _error(W, Wp, gram) -> float:
    return float(row_errors(W, Wp, gram).sum())


# ---------------------------------------------------------------- OWL
@pytest.mark.parametrize("ratios", [[0.01, 0.03, 0.02, 0.05], [0.01, 0.01, 0.01, 0.2], [0.3, 0.1], [0.4, 0.02, 0.02, 0.03, 0.1]])
def test_owl_mapping_mean_bounds_order(ratios):
    target = 0.6
    s = block_sparsities(ratios, target, LAM)
    assert abs(sum(s) / len(s) - target) < 1e-9
    assert all(target - LAM - 1e-12 <= x <= target + LAM + 1e-12 for x in s)
    for ri, si in zip(ratios, s):
        for rj, sj in zip(ratios, s):
            if ri > rj:
                assert si <= sj, (ratios, s)
    assert max(abs(x - target) for x in s) == pytest.approx(LAM)   # the full range is used
    assert s[ratios.index(max(ratios))] == min(s)


def test_owl_mapping_skewed_stays_in_range_weighted_mean_and_uniform():
    # OWL's raw code would put the outlier block at target - 2*lambda*(1 - 1/n); the bound holds here
    s = block_sparsities([0.0] * 9 + [1.0], 0.5, LAM)
    assert min(s) == pytest.approx(0.5 - LAM) and all(0.5 - LAM - 1e-12 <= x <= 0.5 + LAM + 1e-12 for x in s)
    weights = [1, 2, 3, 4]
    s = block_sparsities([0.05, 0.01, 0.03, 0.02], 0.5, LAM, weights)
    assert abs(sum(w * x for w, x in zip(weights, s)) / sum(weights) - 0.5) < 1e-9
    assert block_sparsities([0.02] * 5, 0.7, LAM) == [0.7] * 5


def test_outlier_ratio_is_share_above_m_times_block_mean():
    scores = [torch.tensor([[1.0, 1.0], [1.0, 1.0]]), torch.tensor([100.0])]   # mean 20.8
    assert outlier_ratio(scores, 2.0) == pytest.approx(1 / 5)
    assert outlier_ratio(scores, 5.0) == 0.0


def test_owl_prepass_leaves_inputs_and_model_alone():
    model, _ = tiny()
    adapter = get_adapter(model)
    blocks = adapter.blocks(model)
    samples = [{"input_ids": torch.randint(0, 1000, (1, 32), generator=torch.Generator().manual_seed(i))}
               for i in range(3)]
    inputs = capture_block_inputs(model, blocks, samples, "cpu")
    hidden = inputs.hidden.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    s = owl_block_sparsities(blocks, adapter, inputs, "cpu", PruneConfig(method="wanda", sparsity=0.5))
    assert torch.equal(inputs.hidden, hidden)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert len(s) == len(blocks) and abs(sum(s) / len(s) - 0.5) < 1e-9


def _masks(model):
    adapter = get_adapter(model)
    return [lin.weight == 0 for b in adapter.blocks(model) for lin in adapter.linears(b).values()]


def test_owl_end_to_end_exact_overall_sparsity_and_same_seed_same_masks(tokenizer):
    runs = []
    for _ in range(2):
        model, _ = tiny()
        rep = prune(model, "wanda", sparsity=0.5, layer_sparsity="owl", refine="swap", reconstruct="exact",
                    nsamples=4, seqlen=64, tokenizer=tokenizer, progress=False)
        runs.append((rep, _masks(model)))
    rep = runs[0][0]
    rows = sum(r["shape"][0] for r in rep.per_linear)
    numel = sum(r["numel"] for r in rep.per_linear)
    assert abs(rep.achieved_sparsity - 0.5) * numel <= rows            # within one weight per row
    assert all(abs(s - 0.5) <= LAM + 1e-9 for s in rep.block_sparsity)
    assert max(rep.block_sparsity) > min(rep.block_sparsity)
    for r in rep.per_linear:                                             # each block pruned at its own level
        assert r["zeros"] == r["shape"][0] * int(r["shape"][1] * rep.block_sparsity[r["block"]])
    assert {"owl", "refine", "reconstruct"} <= set(rep.stage_seconds)
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert [r["zeros"] for r in rep.per_linear] == [r["zeros"] for r in runs[1][0].per_linear]


def test_owl_with_nm_pattern_is_refused(tokenizer):
    model, _ = tiny()
    with pytest.raises(PruneError):
        prune(model, "wanda", pattern="2:4", layer_sparsity="owl", nsamples=4, seqlen=64, tokenizer=tokenizer,
              progress=False)


# ---------------------------------------------------------------- refinement
def _start(kind, W, st, nm):
    if kind == "wanda":
        return prune_rows(W, wanda_score(W, st.nu()), None if nm else 0.5, nm)
    if kind == "sparsegpt":
        return prune_obs(W, st.hessian(), None if nm else 0.5, nm)[0]
    return prune_magnitude(W, None if nm else 0.5, nm)


@pytest.mark.parametrize("kind", ["dsnot", "swap"])
@pytest.mark.parametrize("start", ["wanda", "sparsegpt", "magnitude"])
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_refine_after_its_keep_better_guard_never_worse_same_counts_valid_pattern(kind, start, nm):
    for mean in (0.0, 1.0):
        W, _, st = _layer(mean=mean)
        new = _start(start, W, st, nm)
        out = refine(kind, W, new, st, nm, 50)
        assert (row_errors(W, out, st.gram) <= row_errors(W, new, st.gram) * (1 + 1e-9)).all()
        assert torch.equal((out == 0).sum(dim=1), (new == 0).sum(dim=1))
        if nm:
            assert is_valid_n_of_m(out, *nm)
        # every weight is zero, its input value, or (regrown) its original value
        assert ((out == 0) | (out == new) | (out == W)).all()


@pytest.mark.parametrize("kind", ["dsnot", "swap"])
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_refine_improves_a_magnitude_mask_on_offset_outlier_inputs(kind, nm):
    W, _, st = _layer(mean=3.0)
    new = prune_magnitude(W, None if nm else 0.5, nm)
    out = refine(kind, W, new, st, nm, 50)
    assert _error(W, out, st.gram) < 0.8 * _error(W, new, st.gram)
    assert not torch.equal(out == 0, new == 0)


def test_refine_none_or_zero_iterations_returns_input():
    W, _, st = _layer()
    new = _start("wanda", W, st, None)
    assert refine("none", W, new, st, None, 50) is new
    assert torch.equal(refine("swap", W, new, st, None, 0), new)
    with pytest.raises(ValueError):
        refine("bogus", W, new, st, None, 5)


# ---------------------------------------------------------------- exact reconstruction
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_exact_beats_sparsegpt_update_on_its_own_mask(nm):
    W, _, st = _layer(mean=0.5)
    new, _ = prune_obs(W, st.hessian(), None if nm else 0.5, nm)
    mask = new == 0
    if nm is None:
        assert len(set(mask.sum(dim=1).tolist())) > 1, "want unequal per-row counts (padded batch)"
    out = exact(W, mask, st.hessian())
    assert _error(W, out, st.gram) <= _error(W, new, st.gram) * (1 + 1e-6)
    assert (out[mask] == 0).all() and out.dtype == torch.float32


def test_exact_equals_least_squares_per_row():
    g = torch.Generator().manual_seed(1)
    W, X = torch.randn(12, 20, generator=g), torch.randn(200, 20, generator=g) * torch.linspace(0.2, 3, 20)
    st = LinearStats(20, 12, "cpu", gram=True, d2=False)
    st.add(X[None], None)
    mask = torch.rand(12, 20, generator=g) < torch.linspace(0.2, 0.8, 12)[:, None]   # 0.2..0.8 pruned per row
    out = exact(W, mask, st.hessian(), percdamp=0)
    for i in range(12):
        keep = ~mask[i]
        sol = torch.linalg.lstsq(X[:, keep].double(), (X @ W[i]).double()[:, None]).solution[:, 0]
        assert torch.allclose(out[i, keep].double(), sol, rtol=1e-4, atol=1e-4)
    assert (out[mask] == 0).all()


def test_exact_with_dead_input_and_singular_block_is_finite():
    W, _, st = _layer(d_in=16, tokens=4, samples=1)           # 4 tokens < 16 inputs: H is singular
    st.inp.gram[:, 5] = 0
    st.inp.gram[5, :] = 0
    mask = lowest_per_row(W.abs(), 0.5)
    for damp in (0.0, 0.01):
        out = exact(W, mask, st.hessian(), damp)
        assert torch.isfinite(out).all() and (out[mask] == 0).all()


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_cg_lowers_the_damped_error_step_by_step_and_reaches_exact(nm):
    W, _, st = _layer(d_out=16, d_in=24, mean=0.5)
    H = st.hessian()
    start = prune_rows(W, wanda_score(W, st.nu()), None if nm else 0.5, nm)   # Wanda's mask, no update
    mask = start == 0
    Hd = H.double() + 0.01 * torch.mean(torch.diag(H.double())) * torch.eye(24, dtype=torch.float64)

    def damped_error(V):                                        # the objective cg and exact minimise
        D = (W - V).double()
        return float(torch.einsum("ij,jk,ik->", D, Hd, D))
    errors = [damped_error(start)] + [damped_error(conjugate_gradient(W, start, H, 0.01, k)) for k in (1, 2, 4, 8)]
    assert all(b <= a * (1 + 1e-5) for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0]
    full = conjugate_gradient(W, start, H, 0.01, 60)
    assert damped_error(full) == pytest.approx(damped_error(exact(W, mask, H, 0.01)), rel=1e-4)
    assert (full[mask] == 0).all() and (not nm or is_valid_n_of_m(full, *nm))


def test_reconstruct_iters_must_be_positive():
    with pytest.raises(PruneError, match="reconstruct_iters"):
        PruneConfig(method="wanda", sparsity=0.5, reconstruct="cg", reconstruct_iters=0).validate()


# ---------------------------------------------------------------- RIA
def test_ria_score_matches_hand_loops():
    g = torch.Generator().manual_seed(2)
    W, nu = torch.randn(4, 6, generator=g), torch.rand(6, generator=g) + 0.1
    got = ria_score(W, nu, a=0.5)
    for i in range(4):
        for j in range(6):
            row = sum(abs(float(W[i, k])) for k in range(6))
            col = sum(abs(float(W[k, j])) for k in range(4))
            want = (abs(float(W[i, j])) / row + abs(float(W[i, j])) / col) * (float(nu[j]) ** 0.5) ** 0.5
            assert float(got[i, j]) == pytest.approx(want, rel=1e-5)


def test_ria_unstructured_and_plain_nm_select_per_row():
    W, _, st = _layer()
    s = ria_score(W, st.nu(), 0.5)
    assert torch.equal(prune_ria(W, st.nu(), 0.5, None), prune_rows(W, s, 0.5, None))
    assert is_valid_n_of_m(prune_ria(W, st.nu(), None, (2, 4)), 2, 4)


def test_ria_permutation_spreads_channels_and_mask_is_nm_in_permuted_order():
    W, _, st = _layer()
    s = ria_score(W, st.nu(), 0.5)
    perm = ria_permutation(s, 4)
    assert torch.equal(perm.sort()[0], torch.arange(64))
    rank = torch.empty(64, dtype=torch.long)
    rank[torch.argsort(s.sum(dim=0), stable=True)] = torch.arange(64)
    quartile = (rank[perm] // 16).reshape(16, 4)                     # every group: one channel per quartile
    assert torch.equal(quartile.sort(dim=1)[0], torch.arange(4).expand(16, 4))
    out = prune_ria(W, st.nu(), None, (2, 4), permute=True)
    assert is_valid_n_of_m(out[:, perm], 2, 4)
    assert ((out == 0).sum(dim=1) == 32).all()
    assert ((out == 0) | (out == W)).all()


# ---------------------------------------------------------------- through the engine
STAGES = [{"method": "wanda", "sparsity": 0.5, "refine": "dsnot"},
          {"method": "sparsegpt", "sparsity": 0.5, "refine": "swap"},
          {"method": "wanda", "sparsity": 0.5, "reconstruct": "exact"},
          {"method": "wanda", "pattern": "2:4", "refine": "swap", "reconstruct": "exact"},
          {"method": "d2prune", "pattern": "2:4", "refine": "dsnot", "reconstruct": "exact"},
          {"method": "sparsegpt", "sparsity": 0.5, "reconstruct": "cg"}]


@pytest.mark.parametrize("kw", STAGES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_stages_through_the_engine(kw, samples):
    model, _ = tiny()
    rep = prune(model, samples=samples, progress=False, **kw)
    stages = [s for s in ("refine", "reconstruct") if s in kw]
    assert set(stages) <= set(rep.stage_seconds)
    assert rep.achieved_sparsity == 0.5
    for r in rep.per_linear:
        for s in stages:
            if s == "reconstruct" and r["solver"] == "d2-wanda":
                assert f"{s}_error_after" not in r                      # frozen projection: no update
                continue
            assert r[f"{s}_error_after"] <= r[f"{s}_error_before"] * (1 + 1e-6) + 1e-12, r
        if "pattern" in kw:
            assert r["nm_valid"]


@pytest.mark.parametrize("kw", [{"sparsity": 0.5}, {"pattern": "2:4"}, {"pattern": "2:4", "permute": True}])
def test_ria_end_to_end(kw, samples):
    model, _ = tiny()
    rep = prune(model, "ria", samples=samples, progress=False, **kw)
    assert rep.achieved_sparsity == 0.5
    assert all(r["zeros"] == r["shape"][0] * (r["shape"][1] // 2) for r in rep.per_linear)
    if "pattern" in kw and not kw.get("permute"):
        assert all(r["nm_valid"] for r in rep.per_linear)


def test_dsnot_raw_cycles_on_rows_worked_by_hand():
    """DSnoT's cycles alone (no keep-better guard), on two rows whose answer is worked out by hand.
    E[x] = 1 and Var[x] = 1 for every input, so e = Σ (W − Ŵ)_j and the grow metric is W_j.
    Row 0: Ŵ = [0, 1, −1, 0], e = 4 + 2 = 6 > 0. Grow the pruned weight with the largest W_j (j = 0, 4); prune
      a kept weight whose removal lowers e (Ŵ_k < 0: k = 2); e → 6 − 4 − 1 = 1. Next cycle: nothing kept has
      Ŵ_k < 0, so the row stops at [4, 1, 0, 0].
    Row 1: Ŵ = [0, 1, 2, 0], e = −3 − 1 = −4 < 0. Grow the largest −W_j (j = 0, 3); prune the least important
      kept weight with Ŵ_k > 0 (|Ŵ| · ‖x‖: k = 1); e → −4 + 3 + 1 = 0, and the row stops at [−3, 0, 2, 0]."""
    from d2p_helpers.prune.refine import _dsnot_unstructured
    W = torch.tensor([[4.0, 1.0, -1.0, 2.0], [-3.0, 1.0, 2.0, -1.0]])
    cur = torch.tensor([[0.0, 1.0, -1.0, 0.0], [0.0, 1.0, 2.0, 0.0]])
    mu, var, norm = torch.ones(4), torch.ones(4), torch.ones(4)
    e = ((W - cur) * mu).sum(dim=1)
    assert e.tolist() == [6.0, -4.0]
    out = _dsnot_unstructured(W, cur.clone(), e, torch.ones(2, dtype=torch.bool), (cur == 0) & (W != 0), cur != 0,
                              W * mu, W * mu / var, mu, norm, 0.5, 50)
    assert out.tolist() == [[4.0, 1.0, 0.0, 0.0], [-3.0, 0.0, 2.0, 0.0]]


@pytest.mark.parametrize("start", ["wanda", "sparsegpt", "magnitude"])
def test_dsnot_incremental_cycles_equal_the_general_loop(start):
    from d2p_helpers.prune.refine import dsnot
    for mean in (0.0, 1.0, 3.0):
        W, _, st = _layer(mean=mean)
        new = _start(start, W, st, None)
        fast, slow = dsnot(W, new, st, None, 50), dsnot(W, new, st, None, 50, incremental=False)
        assert torch.equal(fast, slow)
        assert not torch.equal(fast, new) or start != "magnitude"      # it did refine something
