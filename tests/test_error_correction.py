"""The error-correction stages: dense-target least squares, sequential groups, block tuning, self-generated
calibration and the per-channel energy correction, each against a direct computation."""
import copy

import pytest
import torch

from d2p_helpers.prune import prune


@pytest.fixture(scope="module")
def tiny_llama():
    from d2p_helpers.models import load_model
    return load_model("tiny-llama")


def _random_stream(seed=0, d_in=24, d_out=10, tokens=400):
    g = torch.Generator().manual_seed(seed)
    X_dense = torch.randn(tokens, d_in, generator=g) * torch.linspace(0.3, 2.0, d_in)
    X = X_dense + 0.3 * torch.randn(tokens, d_in, generator=g)     # the pruned model's drifted inputs
    W0 = torch.randn(d_out, d_in, generator=g)
    return W0, X, X_dense


def test_dense_target_exact_equals_a_direct_least_squares_solve_and_beats_the_own_target():
    from d2p_helpers.prune.reconstruct import conjugate_gradient, exact
    W0, X, Xd = _random_stream()
    n = X.shape[0]
    H, C, Hd = 2 / n * X.T @ X, 2 / n * Xd.T @ X, 2 / n * Xd.T @ Xd
    mask = torch.rand(W0.shape, generator=torch.Generator().manual_seed(1)) < 0.5     # True = pruned
    got = exact(W0, mask, H, percdamp=0.0, cross=C)
    for i in range(W0.shape[0]):                       # row by row: lstsq of the dense output on the kept inputs
        keep = ~mask[i]
        sol = torch.linalg.lstsq(X[:, keep].double(), (Xd @ W0[i]).double()[:, None]).solution[:, 0]
        assert torch.allclose(got[i, keep].double(), sol, atol=1e-4)
        assert torch.all(got[i, mask[i]] == 0)

    def dense_err(W):
        return float(((Xd @ W0.T - X @ W.T) ** 2).sum() / ((Xd @ W0.T) ** 2).sum())
    own = exact(W0, mask, H, percdamp=0.0)
    assert dense_err(got) < dense_err(own) - 1e-3
    cg = conjugate_gradient(W0, W0.masked_fill(mask, 0), H, percdamp=0.0, iters=60, cross=C)
    assert abs(dense_err(cg) - dense_err(got)) < 1e-4
    from d2p_helpers.prune.engine import dense_error

    class St:                                          # the engine's formula from the three Gram matrices
        def hessian(self):
            return H

        def cross_hessian(self):
            return C

        def dense_hessian(self):
            return Hd
    assert abs(dense_error(W0, got, St()) - dense_err(got)) < 1e-5


def test_dense_target_lowers_the_engine_rows_dense_error(tiny_llama):
    model, tok = tiny_llama
    kw = dict(sparsity=0.6, nsamples=4, seqlen=32, progress=False, tokenizer=tok, reconstruct="exact")
    own = prune(copy.deepcopy(model), "wanda", **kw)
    dense = prune(copy.deepcopy(model), "wanda", reconstruct_target="dense", **kw)
    assert dense.calibration["dense_stream_bytes"] == 4 * 32 * 64 * 4
    later = [r for r in dense.per_linear if r["block"] > 0]
    assert later and all(r["error_target"] == "dense" for r in dense.per_linear)
    assert all(r["reconstruct_error_after"] <= r["reconstruct_error_before"] + 1e-6 for r in later)
    assert [r["zeros"] for r in own.per_linear] == [r["zeros"] for r in dense.per_linear]   # same masks


def _manual_sequential(model, tok, cfg_kw):
    """The sequential algorithm written out with the package's pieces: per block, each input group's statistics
    from the block as pruned so far, then the next block gets the pruned block's outputs."""
    from d2p_helpers.calibration import attach_stats, capture_block_inputs, run_block
    from d2p_helpers.data import calibration_windows
    from d2p_helpers.models import get_adapter
    from d2p_helpers.prune.config import PruneConfig
    from d2p_helpers.prune.methods import solve_linear
    cfg = PruneConfig(method="sparsegpt", **cfg_kw)
    adapter = get_adapter(model)
    blocks = adapter.blocks(model)
    win = calibration_windows(tok, cfg.calib, cfg.nsamples, cfg.seqlen, cfg.seed)
    inputs = capture_block_inputs(model, blocks, [{"input_ids": w[None]} for w in win.ids], "cpu")
    groups = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
              ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    seen = {}
    for b, block in enumerate(blocks):
        lins = adapter.linears(block)
        assert sorted(n for g in groups for n in g) == sorted(lins)
        for group in groups:
            stats, handles = attach_stats({n: lins[n] for n in group}, set(group), set(), "cpu")
            run_block(block, inputs)
            for h in handles:
                h.remove()
            for n in group:
                seen[(b, n)] = stats[n].hessian().clone()
                lins[n].weight.data.copy_(solve_linear("sparsegpt", lins[n].weight, stats[n], cfg)[0])
        inputs.hidden = run_block(block, inputs)
    return seen


def test_sequential_gives_each_group_the_statistics_of_the_partly_pruned_block(tiny_llama, monkeypatch):
    model, tok = tiny_llama
    kw = dict(sparsity=0.5, nsamples=4, seqlen=32)
    by_hand = copy.deepcopy(model)
    hand_stats = _manual_sequential(by_hand, tok, kw)
    import d2p_helpers.prune.engine as engine
    engine_stats, real = {}, engine.prune_unit

    def spy(solver, old, st, cfg, report, frozen=False):
        engine_stats[len(engine_stats)] = st.hessian().clone()
        return real(solver, old, st, cfg, report, frozen)
    monkeypatch.setattr(engine, "prune_unit", spy)
    seq = copy.deepcopy(model)
    rep = prune(seq, "sparsegpt", tokenizer=tok, progress=False, sequential=True, **kw)
    names = [(r["block"], r["name"]) for r in rep.per_linear]
    assert [r["group"] for r in rep.per_linear[:7]] == [0, 0, 0, 1, 2, 2, 3]
    for i, key in enumerate(names):
        assert torch.allclose(engine_stats[i], hand_stats[key], rtol=1e-5, atol=1e-6), key
    for (a, b) in zip(seq.parameters(), by_hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    plain = copy.deepcopy(model)
    prune(plain, "sparsegpt", tokenizer=tok, progress=False, **kw)
    down = "model.layers.0.mlp.down_proj.weight"
    assert not torch.allclose(dict(plain.named_parameters())[down], dict(seq.named_parameters())[down])


@pytest.mark.parametrize("setting", [{"sparsity": 0.6}, {"pattern": "2:4"}])
def test_block_tuning_keeps_every_mask_bit_exact_and_lowers_the_block_error(tiny_llama, setting, monkeypatch):
    """Each block's zeros just before and just after its tuning are the same, bit for bit (N:M groups too),
    the weights did move, and the block's output error on the calibration windows went down."""
    import d2p_helpers.prune.block_tune as bt
    from d2p_helpers.masks import is_valid_n_of_m
    model, tok = tiny_llama
    seen, real = [], bt.tune_block

    def spy(block, linears, inputs, targets, cfg, device):
        train = list(inputs.batches())[:-1]                     # 8 windows, one held out

        def every_train_window():
            with torch.no_grad():
                return float(bt._loss(block, train, inputs, targets, device))
        before, err_before = {n: lin.weight.detach().clone() for n, lin in linears.items()}, every_train_window()
        log = real(block, linears, inputs, targets, cfg, device)
        seen.append((before, {n: lin.weight.detach().clone() for n, lin in linears.items()}, log))
        log["every_train_window"] = (err_before, every_train_window())
        return log
    monkeypatch.setattr(bt, "tune_block", spy)
    rep = prune(copy.deepcopy(model), "wanda", nsamples=8, seqlen=32, progress=False, tokenizer=tok,
                block_tune=30, block_tune_lr=1e-3, **setting)
    assert len(seen) == 2 and len(rep.block_tune) == 2
    for before, after, log in seen:
        moved = False
        for n in before:
            assert torch.equal(before[n] == 0, after[n] == 0), n
            moved |= not torch.equal(before[n], after[n])
            if "pattern" in setting:
                assert is_valid_n_of_m(after[n], 2, 4)
        assert moved
        assert log["train_error_after"] < log["train_error_before"]
        assert log["held_error_after"] <= log["held_error_before"]
        assert log["train_error_windows"] == log["held_windows"] == 1     # the diagnostic's sample
        assert log["every_train_window"][1] < log["every_train_window"][0]


def test_self_generated_calibration_is_deterministic_for_a_seed(tiny_llama):
    from d2p_helpers.data import generated_windows, mixed_calibration
    model, tok = tiny_llama
    a = generated_windows(model, tok, 3, 16, seed=5)
    b = generated_windows(model, tok, 3, 16, seed=5)
    c = generated_windows(model, tok, 3, 16, seed=6)
    assert a.ids.shape == (3, 16) and torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    mix = mixed_calibration(tok, "news+self", 5, 16, seed=0, model=model)
    news = mixed_calibration(tok, "news", 3, 16, seed=0)
    assert mix.ids.shape == (5, 16) and torch.equal(mix.ids[0], news.ids[0]) and torch.equal(mix.ids[2], news.ids[1])
    rep = prune(copy.deepcopy(model), "wanda", sparsity=0.5, nsamples=4, seqlen=16, calib="news+self",
                tokenizer=tok, progress=False)
    assert rep.calibration["self_generated"]["seed"] == 0 and len(rep.calibration["ids_sha1"]) == 16


def test_self_text_is_generated_once_per_model_and_seed_then_read_back(tiny_llama):
    from d2p_helpers import data
    model, tok = tiny_llama
    first = data.self_windows(model, tok, 3, 16, seed=5)
    again = data.self_windows(model, tok, 3, 16, seed=5)
    fresh = data.generated_windows(model, tok, 3, 16, seed=5)
    assert first.notes["cache"] == "written" and again.notes["cache"] == "read"
    assert torch.equal(first.ids, again.ids) and torch.equal(again.ids, fresh.ids)
    assert again.notes["generate_seconds"] == first.notes["generate_seconds"] > 0
    other = data.self_windows(model, tok, 3, 16, seed=6)
    assert other.notes["cache"] == "written" and len(list(data.self_text_dir().glob("*.pt"))) == 2
    pruned = copy.deepcopy(model)      # other weights: another key, never the dense model's text
    prune(pruned, "magnitude", sparsity=0.5, progress=False)
    assert data.model_fingerprint(pruned) != data.model_fingerprint(model)
    assert data.self_windows(pruned, tok, 3, 16, seed=5).notes["cache"] == "written"
    rep = prune(copy.deepcopy(model), "wanda", sparsity=0.5, nsamples=4, seqlen=16, calib="news+self",
                tokenizer=tok, progress=False)
    assert rep.calibration["self_generated"]["cache"] == "written"
    rep = prune(copy.deepcopy(model), "wanda", sparsity=0.5, nsamples=4, seqlen=16, calib="news+self",
                tokenizer=tok, progress=False)
    assert rep.calibration["self_generated"]["cache"] == "read"


def test_correct_scale_never_touches_a_zero_and_matches_the_dense_energy():
    from d2p_helpers.prune.reconstruct import scale_rows
    W0, X, Xd = _random_stream(3)
    n = X.shape[0]
    H, Hd = 2 / n * X.T @ X, 2 / n * Xd.T @ Xd
    pruned = W0.masked_fill(W0.abs() < W0.abs().median(), 0)
    pruned[0] = 0                                         # a row with no output energy keeps scale 1
    out, scales = scale_rows(W0, pruned, H, Hd)
    assert torch.equal(out == 0, pruned == 0) and scales[0] == 1
    energy = ((out @ H) * out).sum(1)[1:]
    assert torch.allclose(energy, ((W0 @ Hd) * W0).sum(1)[1:], rtol=1e-4)


def test_new_stages_are_refused_where_they_cannot_apply(tiny_llama):
    from d2p_helpers.prune import PruneError
    model, tok = tiny_llama
    for kwargs, words in [(dict(reconstruct_target="dense"), "needs reconstruct"),
                          (dict(sequential=True, frozen="auto:kl", method="d2prune"), "sequential does not yet"),
                          (dict(block_tune=5, block_tune_holdout=0.01, nsamples=4), "fewer than one"),
                          (dict(calib="news+"), "empty part"), (dict(calib="self:4"), "takes no options")]:
        kwargs = {"method": "wanda", **kwargs}
        with pytest.raises(PruneError) as exc:
            prune(copy.deepcopy(model), sparsity=0.5, seqlen=16, tokenizer=tok, progress=False,
                  **{"nsamples": 4, **kwargs})
        assert words in str(exc.value), exc.value


def test_block_tune_default_lr_is_the_one_the_held_out_grid_chose():
    import json
    from pathlib import Path

    from d2p_helpers.prune.config import PruneConfig
    rows = json.loads((Path(__file__).resolve().parent.parent / "results" / "block_tune_lr.json").read_text())["rows"]
    best = {s: min((r for r in rows if r["setting"] == s), key=lambda r: r["held_error_after"])["lr"]
            for s in {r["setting"] for r in rows}}
    assert PruneConfig.block_tune_lr == min(best.values())


def test_a_later_sequential_group_stops_its_forward_after_its_last_linear_and_changes_nothing(tiny_llama,
                                                                                            monkeypatch):
    """--sequential's o / gate-up / down passes stop once the group's last linear has run (the o group's pass
    never reaches the MLP): the pruned weights, dense stream included, are bit-identical to full passes."""
    import d2p_helpers.prune.engine as engine
    model, tok = tiny_llama
    kw = dict(sparsity=0.5, nsamples=4, seqlen=32, sequential=True, reconstruct="exact", reconstruct_target="dense")
    down_calls = []
    early = copy.deepcopy(model)
    hook = early.model.layers[0].mlp.down_proj.register_forward_hook(lambda *a: down_calls.append(1))
    prune(early, "sparsegpt", tokenizer=tok, progress=False, **kw)
    hook.remove()

    class NoHandle:
        def remove(self):
            pass
    monkeypatch.setattr(engine, "_stop_after", lambda linear: NoHandle())
    full = copy.deepcopy(model)
    hook = full.model.layers[0].mlp.down_proj.register_forward_hook(lambda *a: down_calls.append(2))
    prune(full, "sparsegpt", tokenizer=tok, progress=False, **kw)
    hook.remove()
    assert down_calls.count(1) < down_calls.count(2), "the early passes ran the whole block"
    for (name, a), b in zip(early.named_parameters(), full.parameters()):
        assert torch.equal(a, b), name
