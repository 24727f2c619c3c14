"""LoRA recovery: sparsity and N:M pattern survive the merge; training resumes from its checkpoint."""
import json
from dataclasses import replace

import pytest
import torch

from conftest import tiny
from d2p_helpers.finetune import finetune
from d2p_helpers.masks import is_valid_n_of_m
from d2p_helpers.prune import prune, save_pruned


def _zeros(model):
    return {n: (p == 0) for n, p in model.named_parameters() if n.endswith("proj.weight")}


@pytest.mark.slow
def test_lora_merge_keeps_exact_sparsity_and_pattern(tmp_path):
    model, tok = tiny("tiny-llama")
    prune(model, "d2prune", pattern="2:4", nsamples=2, seqlen=64, tokenizer=tok, progress=False)
    before = _zeros(model)
    q_before = model.model.layers[0].self_attn.q_proj.weight.clone()
    res = finetune(model, tok, tmp_path / "ft", steps=3, seqlen=32, batch_size=2, lr=1e-2, progress=False)
    after = _zeros(res["model"])
    assert all(torch.equal(before[n], after[n]) for n in before)
    q = res["model"].model.layers[0].self_attn.q_proj.weight
    assert is_valid_n_of_m(q, 2, 4) and not torch.equal(q, q_before)     # it learned, where allowed
    assert len(res["log"]["losses"]) == 3


@pytest.mark.slow
def test_finetune_resumes_from_checkpoint(tmp_path):
    model, tok = tiny("tiny-llama")
    finetune(model, tok, tmp_path / "ft", steps=2, seqlen=32, batch_size=2, save_every=1, progress=False)
    model2, tok = tiny("tiny-llama")
    res = finetune(model2, tok, tmp_path / "ft", steps=4, seqlen=32, batch_size=2, save_every=1, progress=False)
    assert res["log"]["resumed_from"] == 2 and len(res["log"]["losses"]) == 4


@pytest.mark.slow
def test_cli_finetune_writes_model_and_log(tmp_path, run_cli):
    model, tok = tiny("tiny-llama")
    rep = prune(model, "sparsegpt", sparsity=0.6, nsamples=2, seqlen=64, tokenizer=tok, progress=False)
    save_pruned(model, tok, tmp_path / "pruned", rep)
    code, _, err = run_cli("finetune", "--model", tmp_path / "pruned", "--steps", "2", "--seqlen", "32",
                           "--batch-size", "2", "--out", tmp_path / "ft", "--eval", "wiki", "--eval-windows", "1",
                           "--no-progress")
    assert code == 0, err
    log = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert len(log["losses"]) == 2 and "wiki" in log["ppl_after"]
    from transformers import AutoModelForCausalLM
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "ft" / "model")
    w = again.model.layers[0].mlp.up_proj.weight
    assert abs(float((w == 0).float().mean()) - 0.6) < 0.01


@pytest.mark.slow
def test_recovery_study_reuses_finished_rows_only_under_the_same_protocol(tmp_path, monkeypatch):
    import d2p_helpers.prune as prune_pkg
    from studies.lora import RecoveryProtocol, recovery_study
    proto = RecoveryProtocol(model="tiny-llama", methods=("wanda",), settings=("0.5",), nsamples=2, seqlen=32,
                             steps=2, train_seqlen=16, eval_windows=1, zeroshot_tasks=("piqa",), zeroshot_limit=2)
    first = recovery_study(tmp_path, proto, progress=False)
    row = first["rows"][0]
    assert row["q_sparsity"][0] == row["q_sparsity"][1] and len(row["losses"]) == 2 and row["train_seconds"] > 0
    calls = []
    monkeypatch.setattr(prune_pkg, "prune", lambda *a, **k: calls.append(a))
    again = recovery_study(tmp_path, proto, progress=False)
    assert again == first and not calls                     # every row came from its row.json
    monkeypatch.undo()
    other = recovery_study(tmp_path, replace(proto, zeroshot_limit=3), progress=False)
    assert json.loads((tmp_path / "wanda_0.5" / "row.json").read_text())["protocol"]["zeroshot_limit"] == 3
    assert other["rows"][0]["losses"] == row["losses"]      # the LoRA checkpoint itself is reused


@pytest.mark.slow
def test_resuming_with_other_training_settings_is_refused(tmp_path):
    import pytest
    model, tok = tiny("tiny-llama")
    finetune(model, tok, tmp_path / "ft", steps=2, seqlen=16, batch_size=1, progress=False, save_every=1)
    model, tok = tiny("tiny-llama")
    with pytest.raises(ValueError, match="lr 0.0002 -> 0.001"):
        finetune(model, tok, tmp_path / "ft", steps=2, seqlen=16, batch_size=1, lr=1e-3, progress=False)
