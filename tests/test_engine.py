"""Pruning engine: the algorithms' known relations, exact sparsity, N:M validity, round trips."""
import json

import pytest
import torch

from conftest import tiny
from d2p_helpers.calibration import LinearStats
from d2p_helpers.masks import is_valid_n_of_m, lowest_n_of_m, sparsity_of
from d2p_helpers.prune import METHODS, PruneError, prune, save_pruned
from d2p_helpers.prune.engine import PruneConfig, solve_linear
from d2p_helpers.prune.d2prune import d2_wanda_score
from d2p_helpers.prune.wanda import wanda_score


def _layer_and_stats(d_out=64, d_in=128, samples=16, tokens=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g)
    mix = torch.randn(d_in, d_in, generator=g) / d_in ** 0.5 + torch.eye(d_in)
    scale = torch.rand(d_in, generator=g) * 3 + 0.1               # uneven channel norms, as in LLMs
    X = (torch.randn(samples, tokens, d_in, generator=g) @ mix) * scale
    st = LinearStats(d_in, d_out, "cpu", gram=True, d2=True)
    st.add(X, X @ W.t())
    return W, X, st


def _err(W, Wp, X):
    return float(((X @ (W - Wp).t()) ** 2).sum())


def test_reconstruction_error_order_sparsegpt_wanda_magnitude():
    W, X, st = _layer_and_stats()
    cfg = PruneConfig(method="sparsegpt", sparsity=0.5)
    errs = {m: _err(W, solve_linear(m, W, st, cfg)[0], X) for m in ("sparsegpt", "wanda", "magnitude")}
    assert errs["sparsegpt"] < errs["wanda"] < errs["magnitude"], errs


def test_d2_update_with_zero_lambdas_is_sparsegpt_exactly():
    W, X, st = _layer_and_stats()
    cfg = PruneConfig(method="d2prune", sparsity=0.5, r1=0, r2=0)
    a = solve_linear("d2-sparsegpt", W, st, cfg)[0]
    b = solve_linear("sparsegpt", W, st, cfg)[0]
    assert torch.equal(a, b)
    c = solve_linear("d2-sparsegpt", W, st, PruneConfig(method="d2prune", sparsity=0.5, s=10))[0]
    assert not torch.equal(a != 0, c != 0), "the D² term (r1=1, small s) should change some choices"


def test_d2_wanda_with_zero_lambdas_picks_wandas_mask():
    W, X, st = _layer_and_stats()
    cfg = PruneConfig(method="d2-wanda", sparsity=0.5, r1=0, r2=0)
    assert torch.equal(solve_linear("d2-wanda", W, st, cfg)[0] == 0, solve_linear("wanda", W, st, cfg)[0] == 0)
    # the two scores rank identically: one is the square of the other
    y, x = st.d2_stats(1500, "frozen")
    assert torch.allclose(d2_wanda_score(W, st.nu(), y, x, 0, 0), wanda_score(W, st.nu()) ** 2, rtol=1e-5)


@pytest.mark.parametrize("solver", ["magnitude", "wanda", "sparsegpt", "d2-sparsegpt", "d2-wanda"])
@pytest.mark.parametrize("pattern", [None, "2:4", "4:8", "3:4"])
def test_exact_sparsity_and_nm_validity(solver, pattern):
    W, X, st = _layer_and_stats()
    cfg = PruneConfig(method="d2prune", sparsity=None if pattern else 0.6, pattern=pattern)
    Wp = solve_linear(solver, W, st, cfg)[0]
    if pattern:
        n, m = cfg.nm
        assert is_valid_n_of_m(Wp, n, m)
        assert sparsity_of(Wp) == pytest.approx(n / m, abs=1e-9)
    else:
        # within one weight per row (per-row solvers) or per 128-column block (OBS solvers)
        assert abs((Wp == 0).sum().item() - 0.6 * W.numel()) <= W.shape[0]


def test_nm_mask_picks_lowest_in_each_group():
    s = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 6.0, 7.0]])
    assert lowest_n_of_m(s, 2, 4).tolist() == [[False, True, False, True, True, True, False, False]]


# every method on tiny-llama in the fast tier; on tiny-opt (same code, other layer names) only D²Prune, whose
# frozen projection differs by family, is fast, the others run in the slow tier
@pytest.mark.parametrize("method,name", [(m, "tiny-llama") for m in METHODS] + [("d2prune", "tiny-opt")]
                         + [pytest.param(m, "tiny-opt", marks=pytest.mark.slow) for m in METHODS if m != "d2prune"])
def test_every_method_end_to_end(name, method):
    model, tok = tiny(name)
    embed = model.get_input_embeddings().weight.clone()
    head = model.get_output_embeddings().weight.clone()
    rep = prune(model, method, sparsity=0.5, nsamples=4, seqlen=64, tokenizer=tok, progress=False, track_error="yes")
    assert rep.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    assert all(abs(r["sparsity"] - 0.5) <= 1 / r["shape"][1] + 1e-9 or r["solver"] in ("sparsegpt", "d2-sparsegpt", "magnitude")
               for r in rep.per_linear)
    assert torch.equal(model.get_input_embeddings().weight, embed) and torch.equal(model.get_output_embeddings().weight, head)
    assert all(r["rel_error"] is not None and r["rel_error"] >= 0 for r in rep.per_linear)
    n_blocks = len(model.config.to_dict().get("num_hidden_layers", 2) * [0])
    assert len({r["block"] for r in rep.per_linear}) == n_blocks
    if method == "d2prune":
        expected = "k" if name == "tiny-opt" else "v"
        assert rep.frozen_per_block == [expected] * n_blocks
        frozen_rows = [r for r in rep.per_linear if r["solver"] == "d2-wanda"]
        assert len(frozen_rows) == n_blocks and all(r["name"].endswith(f"{expected}_proj") for r in frozen_rows)


def test_nm_pattern_end_to_end():
    model, tok = tiny("tiny-llama")
    rep = prune(model, "d2prune", pattern="2:4", nsamples=4, seqlen=64, tokenizer=tok, progress=False)
    assert all(r["nm_valid"] for r in rep.per_linear) and rep.achieved_sparsity == pytest.approx(0.5)


def test_same_seed_same_masks_and_different_seed_differs():
    masks = []
    for seed in (0, 0, 1):
        model, tok = tiny("tiny-llama")
        prune(model, "d2prune", sparsity=0.5, nsamples=4, seqlen=64, seed=seed, tokenizer=tok, progress=False)
        masks.append(torch.cat([p.flatten() == 0 for n, p in model.named_parameters() if "proj" in n]))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_save_reload_round_trip(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM
    from d2p_helpers.data import eval_windows
    from d2p_helpers.evaluate import perplexity
    model, tok = tiny("tiny-llama")
    rep = prune(model, "d2prune", sparsity=0.5, nsamples=4, seqlen=64, tokenizer=tok, progress=False)
    save_pruned(model, tok, tmp_path / "pruned", rep)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    win = eval_windows(tok, "wiki", 64, 2).ids
    assert perplexity(model, win, progress=False) == pytest.approx(perplexity(again, win, progress=False), rel=1e-6)
    assert json.loads((tmp_path / "pruned" / "d2p_prune.json").read_text())["method"] == "d2prune"


def test_bad_requests_fail_before_work():
    model, tok = tiny("tiny-opt")
    before = {n: p.clone() for n, p in model.named_parameters()}
    for kwargs, needle in [({"sparsity": 1.0}, "sparsity"), ({"sparsity": -0.1}, "sparsity"),
                           ({"pattern": "4:2"}, "0 < N < M"), ({"pattern": "2:3"}, "does not divide"),
                           ({"sparsity": 0.5, "frozen": "o"}, "frozen"), ({"sparsity": 0.5, "lambda": 1}, "unknown option"),
                           ({}, "exactly one")]:
        with pytest.raises(PruneError, match=needle):
            prune(model, "d2prune", tokenizer=tok, nsamples=2, seqlen=32, progress=False, **kwargs)
    with pytest.raises(PruneError, match="unknown method"):
        prune(model, "obs", sparsity=0.5, tokenizer=tok)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_unsupported_architecture_names_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel
    from d2p_helpers.models import ModelError, get_adapter
    with pytest.raises(ModelError, match="supported: opt, llama"):
        get_adapter(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)))


def test_bf16_model_prunes_with_fp32_statistics():
    from d2p_helpers.models import load_model
    model, tok = load_model("tiny-llama", dtype="bfloat16")
    rep = prune(model, "d2prune", sparsity=0.5, nsamples=4, seqlen=64, tokenizer=tok, progress=False)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert rep.achieved_sparsity == pytest.approx(0.5, abs=0.01)


def _reference_sparsegpt(W, H, sparsity, blocksize=128, percdamp=0.01, exact_count=True):
    """SparseGPT's `fasterprune` (unstructured), line by line, with one change when `exact_count`: the block's
    mask takes exactly k = int(numel * sparsity) entries (stable sort), as ours does. fasterprune's own rule,
    `tmp <= sort(tmp)[k]`, takes k + 1 (exact_count=False; the test below shows the difference)."""
    W = W.clone()
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0])
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, W.shape[1], blocksize):
        i2 = min(i1 + blocksize, W.shape[1])
        W1, Q1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros_like(W[:, i1:i2]), torch.zeros_like(W[:, i1:i2]), Hinv[i1:i2, i1:i2]
        tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
        k = int(tmp.numel() * sparsity)
        if exact_count:
            mask1 = torch.zeros(tmp.numel(), dtype=torch.bool)
            mask1[torch.sort(tmp.flatten(), stable=True)[1][:k]] = True
            mask1 = mask1.view_as(tmp)
        else:
            thresh = torch.sort(tmp.flatten())[0][k]
            mask1 = tmp <= thresh
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def test_obs_update_matches_reference_sparsegpt():
    W, X, st = _layer_and_stats(d_in=320)     # two full 128-column blocks and a partial one
    ours = solve_linear("sparsegpt", W, st, PruneConfig(method="sparsegpt", sparsity=0.5))[0]
    ref = _reference_sparsegpt(W, st.hessian(), 0.5)
    assert torch.equal(ours == 0, ref == 0)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_fasterprunes_own_mask_rule_takes_one_more_weight_per_block_than_ours():
    """Why the reference above changes one line: fasterprune's `tmp <= thresh` prunes k + 1 weights per
    128-column block. On the first block (same scores for both) its mask is ours plus one weight."""
    W, X, st = _layer_and_stats(d_in=256)
    ours = solve_linear("sparsegpt", W, st, PruneConfig(method="sparsegpt", sparsity=0.5))[0]
    faithful = _reference_sparsegpt(W, st.hessian(), 0.5, exact_count=False)
    k = int(W.shape[0] * 128 * 0.5)
    assert [int((faithful[:, b:b + 128] == 0).sum()) for b in (0, 128)] == [k + 1, k + 1]
    assert [int((ours[:, b:b + 128] == 0).sum()) for b in (0, 128)] == [k, k]
    first_ours, first_faithful = ours[:, :128] == 0, faithful[:, :128] == 0
    assert bool((first_faithful | ~first_ours).all()) and int((first_faithful & ~first_ours).sum()) == 1


def test_dense_block_stats_sees_the_dense_model_inputs_of_that_block():
    from d2p_helpers.calibration import dense_block_stats
    model, _ = tiny("tiny-llama")
    samples = [{"input_ids": ids[None]} for ids in torch.randint(0, 1000, (3, 16), generator=torch.Generator().manual_seed(0))]
    linears, stats = dense_block_stats(model, samples, 1, names=["self_attn.q_proj"])
    assert list(linears) == ["self_attn.q_proj"]
    seen = []
    hook = linears["self_attn.q_proj"].register_forward_hook(lambda m, i, o: seen.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        for s in samples:
            model(**s)
    hook.remove()
    X = torch.cat(seen).float()
    st = stats["self_attn.q_proj"].inp
    assert st.tokens == X.shape[0] == 48
    assert torch.allclose(st.sq, X.pow(2).sum(0), rtol=1e-4, atol=1e-4)
    assert torch.allclose(st.gram, X.T @ X, rtol=1e-4, atol=1e-3)
