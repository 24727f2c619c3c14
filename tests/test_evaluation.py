"""Evaluation suite: zero-shot through lm-eval and our scorer, attention KL/RMSE."""
import copy
import json

import pytest

from conftest import tiny
from d2p_helpers.attention import compare_attention
from d2p_helpers.data import eval_windows
from d2p_helpers.prune import prune
from d2p_helpers.zeroshot import TASKS, chance, paper_mean, run_lm_eval, score_tasks


@pytest.mark.slow
def test_our_scorer_agrees_with_lm_eval_on_every_task():
    model, tok = tiny("tiny-llama", seed=3)
    tasks = list(TASKS)
    ours = score_tasks(model, tok, tasks, limit=10, progress=False)
    theirs = run_lm_eval(model, tok, tasks, limit=10)
    for t in tasks:
        assert ours[t]["acc"] == pytest.approx(theirs[t]["acc"]), t
        if TASKS[t][1]:
            assert ours[t]["acc_norm"] == pytest.approx(theirs[t]["acc_norm"]), t


def test_paper_mean_uses_acc_norm_where_present():
    res = {"boolq": {"acc": 0.6, "acc_norm": None}, "hellaswag": {"acc": 0.3, "acc_norm": 0.4}}
    assert paper_mean(res) == pytest.approx(0.5)


def test_dense_against_itself_is_zero_and_pruned_is_not(tokenizer):
    dense, tok = tiny("tiny-llama")
    win = eval_windows(tok, "wiki", 64, 2).ids
    implementation = dense.config._attn_implementation
    same = compare_attention(copy.deepcopy(dense), dense, win, progress=False)
    assert same["mean_kl"] == pytest.approx(0, abs=1e-7) and same["mean_rmse"] == pytest.approx(0, abs=1e-7)
    assert same["logit_kl"] == pytest.approx(0, abs=1e-6)
    pruned = copy.deepcopy(dense)
    prune(pruned, "sparsegpt", sparsity=0.5, nsamples=4, seqlen=64, tokenizer=tok, progress=False)
    diff = compare_attention(pruned, dense, win, progress=False)
    assert diff["mean_kl"] > 1e-6 and diff["mean_rmse"] > 1e-6 and diff["logit_kl"] > 1e-6
    assert len(diff["per_block"]) == 2 and all(0 < r["peak_dense"] <= 1 for r in diff["per_block"])
    # the model is back on its own attention implementation afterwards
    assert dense.config._attn_implementation == implementation


@pytest.mark.slow
def test_cli_prune_writes_zeroshot_and_attention(tmp_path, run_cli):
    out = tmp_path / "r.json"
    code, _, err = run_cli("prune", "--model", "tiny-opt", "--method", "d2prune", "--sparsity", "0.5", "--nsamples", "4",
                           "--seqlen", "64", "--eval", "wiki", "--eval-windows", "2", "--zeroshot", "piqa,rte",
                           "--limit", "4", "--zeroshot-engine", "fast", "--attention", "--attention-windows", "1",
                           "--out", out, "--no-progress")
    assert code == 0, err
    rec = json.loads(out.read_text())
    assert set(rec["zeroshot"]) == {"piqa", "rte"} and rec["zeroshot"]["piqa"]["n"] == 4
    assert "acc_norm where" in rec["zeroshot_mean_definition"]
    assert rec["attention"]["mean_kl"] > 0 and len(rec["attention"]["per_block"]) == 2
    assert rec["method"] == "d2prune" and rec["frozen_per_block"] == ["k", "k"]


@pytest.mark.slow
def test_embedded_model_beats_chance_on_hellaswag_and_piqa(smollm2):
    model, tok = smollm2
    res = score_tasks(model, tok, ["hellaswag", "piqa"], limit=100, progress=False)
    assert res["hellaswag"]["acc_norm"] > chance("hellaswag") + 0.08, res
    assert res["piqa"]["acc_norm"] > chance("piqa") + 0.05, res


def test_evaluate_is_the_scorer_plus_its_record_and_rejects_unknown_engines():
    import pytest
    from conftest import tiny
    from d2p_helpers.zeroshot import TaskError, evaluate, zeroshot_record
    model, tok = tiny("tiny-llama")
    rec = evaluate(model, tok, ["piqa"], limit=3, progress=False)
    direct = zeroshot_record(score_tasks(model, tok, ["piqa"], limit=3, progress=False), "fast")
    assert rec["zeroshot_route"] == "fast" and rec["zeroshot_mean"] == direct["zeroshot_mean"]
    with pytest.raises(TaskError, match="engine"):
        evaluate(model, tok, ["piqa"], limit=3, engine="harness")
