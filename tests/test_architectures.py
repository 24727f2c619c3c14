"""Every supported decoder family on a tiny random config: prune, perplexity, save and reload."""
import pytest
import torch

from d2p_helpers.data import eval_windows
from d2p_helpers.evaluate import perplexity
from d2p_helpers.models import TINY_MODELS, load_model
from d2p_helpers.prune import prune, save_pruned


# two families in the fast tier, the others (same code path, other layer names) in the slow one
@pytest.mark.parametrize("name", [n if n in ("tiny-opt", "tiny-llama") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in TINY_MODELS])
def test_prune_eval_save_reload(name, tmp_path):
    from transformers import AutoModelForCausalLM
    model, tok = load_model(name)
    win = eval_windows(tok, "wiki", 32, 2).ids
    dense = perplexity(model, win, progress=False)
    rep = prune(model, "d2prune", pattern="2:4", nsamples=2, seqlen=32, tokenizer=tok, progress=False)
    assert all(r["nm_valid"] for r in rep.per_linear) and rep.achieved_sparsity == pytest.approx(0.5)
    assert len(rep.frozen_per_block) == model.config.num_hidden_layers
    pruned = perplexity(model, win, progress=False)
    assert torch.isfinite(torch.tensor([dense, pruned])).all()
    save_pruned(model, tok, tmp_path / "m", rep)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert perplexity(again, win, progress=False) == pytest.approx(pruned, rel=1e-5)
    w = dict(again.named_parameters())
    zeros = sum(int((w[f"{k}"] == 0).sum()) for k in w if k.endswith("proj.weight") or k.endswith("fc1.weight"))
    assert zeros > 0


@pytest.mark.slow
def test_embedded_smollm2_is_a_llama_with_gqa(smollm2):
    from d2p_helpers.models import get_adapter, model_summary
    model, _ = smollm2
    s = model_summary(model)
    assert s["model_type"] == "llama" and s["blocks"] == 30
    assert s["linears_per_block"]["self_attn.k_proj"] == [192, 576]      # 3 KV heads of 64: grouped-query attention
    assert get_adapter(model).default_frozen() == "v"


def test_memory_plan_for_llama2_7b_matches_hand_arithmetic():
    from d2p_helpers.scale import memory_plan
    p = memory_plan("LLaMA-2-7B", nsamples=128)
    assert p["block_weights_gib"] == pytest.approx(202_375_168 * 2 / 2**30)          # 4*4096^2 + 3*4096*11008
    assert p["calibration_activations_gib"] == pytest.approx(2 * 128 * 4096 * 4096 * 2 / 2**30)
    assert 6 < p["total_weights_gib"] < 14 and p["device_peak_estimate_gib"] < 24


def test_2_4_layout_check_and_cpu_has_no_kernel():
    from d2p_helpers import speed
    model, tok = load_model("tiny-llama")
    prune(model, "sparsegpt", pattern="2:4", nsamples=2, seqlen=32, tokenizer=tok, progress=False)
    layout = speed.check_24_layout(model)
    assert layout["all_valid"] and layout["linears"] == 14
    assert speed.cpu_roundtrip_24(model.model.layers[0].self_attn.q_proj.weight)
    if not torch.cuda.is_available():
        assert "skipped" in speed.time_gemms()
        with pytest.raises(RuntimeError, match="no 2:4 sparse kernel on CPU"):
            speed.to_semi_structured(model)


@pytest.mark.slow
def test_compressed_2_4_round_trip_is_exact_and_smaller(tmp_path):
    from d2p_helpers.compress import load_compressed, pack_2_4, save_compressed, unpack_2_4
    w = torch.randn(16, 64)
    w = w.masked_fill(torch.tensor([True, False, True, False]).repeat(16, 16), 0)
    assert torch.equal(unpack_2_4(*pack_2_4(w)), w)
    model, tok = load_model("tiny-llama", dtype="float16")
    prune(model, "d2prune", pattern="2:4", nsamples=2, seqlen=32, tokenizer=tok, progress=False)
    info = save_compressed(model, tok, tmp_path / "c")
    assert len(info["packed"]) == 14
    again, tok2 = load_compressed(tmp_path / "c")
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n
    save_pruned(model, tok, tmp_path / "dense")
    assert (tmp_path / "c" / "model_2_4.safetensors").stat().st_size < (tmp_path / "dense" / "model.safetensors").stat().st_size
