"""Foundation: environment files agree, assets load offline, perplexity is right, bad input exits 2."""
import json
import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from d2p_helpers.data import DataError, calibration_windows, eval_windows, load_articles, load_text

ROOT = Path(__file__).resolve().parent.parent


def _names(reqs):
    return {re.split(r"[<>=!~\[ ]", r.strip(), 1)[0].lower().replace("_", "-") for r in reqs if r.strip()}


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _names(py["dependencies"]) | {n for extra in py["optional-dependencies"].values() for n in _names(extra)}
    import yaml
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip_list = next(d["pip"] for d in deps if isinstance(d, dict))
    in_env = _names([r for r in pip_list if not r.startswith("-e")])
    assert declared == in_env, (declared - in_env, in_env - declared)


def test_wiki_splits_are_disjoint_and_real():
    splits = {s: load_articles("wiki", s) for s in ("calib", "val", "test")}
    assert [len(splits[s]) for s in ("calib", "val", "test")] == [70, 10, 20]
    seen = [set(v) for v in splits.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert sum(len(a) for v in splits.values() for a in v) > 3_000_000
    assert len(load_articles("news", "calib")) > 200


def test_text_names_and_errors(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("hello world " * 50)
    assert load_text(str(f)).startswith("hello")
    with pytest.raises(DataError, match="unknown text"):
        load_text("wikitext103")
    with pytest.raises(DataError, match="not found"):
        load_text(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="hub"):
        load_text("wikitext2")


def test_windows(tokenizer):
    a = calibration_windows(tokenizer, "news", 4, 128, seed=0)
    b = calibration_windows(tokenizer, "news", 4, 128, seed=0)
    c = calibration_windows(tokenizer, "news", 4, 128, seed=1)
    assert a.ids.shape == (4, 128) and torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    w = eval_windows(tokenizer, "wiki", 256, 3)
    assert w.ids.shape == (3, 256)
    with pytest.raises(DataError, match="fewer than one window"):
        eval_windows(tokenizer, "news:val", 10**7)


@pytest.mark.parametrize("args,needle", [
    (["eval", "--model", "no-such-model", "--eval", "wiki"], "offline choices"),
    (["eval", "--model", "facebook/opt-125m", "--eval", "wiki"], "offline"),
    (["eval", "--model", "tiny-opt", "--eval", "books"], "unknown text"),
    (["eval", "--model", "tiny-opt", "--eval", "/nonexistent/x.txt"], "not found"),
    (["eval", "--model", "tiny-opt", "--eval", "news:val", "--seqlen", "10000000"], "fewer than one window"),
    (["prune", "--model", "tiny-opt", "--method", "d2prune", "--sparsity", "1.2", "--eval", "wiki"], "sparsity"),
    (["prune", "--model", "tiny-opt", "--method", "d2prune", "--pattern", "4:4", "--eval", "wiki"], "0 < N < M"),
    (["prune", "--model", "tiny-opt", "--method", "d2prune", "--pattern", "2:5", "--eval", "wiki"], "does not divide"),
    (["prune", "--model", "tiny-opt", "--method", "obs", "--sparsity", "0.5"], "unknown method"),
    (["prune", "--model", "tiny-opt", "--method", "d2prune", "--sparsity", "0.5", "--frozen", "x"], "frozen"),
    (["prune", "--model", "tiny-opt", "--method", "d2prune", "--sparsity", "0.5", "--bogus", "1"], "unrecognized"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle, run_cli):
    out = tmp_path / "r.json"
    code, _, err = run_cli(*args, "--out", out)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".r.json*"))


@pytest.mark.slow
def test_the_console_script_is_the_same_entry_point(tmp_path):
    """One real subprocess: `python -m d2p_helpers.cli` exits 2 with one line on bad input."""
    res = subprocess.run([sys.executable, "-m", "d2p_helpers.cli", "prune", "--model", "tiny-opt", "--method", "obs",
                          "--sparsity", "0.5"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "unknown method" in res.stderr


def test_eval_record_on_tiny_model(tmp_path, run_cli):
    out = tmp_path / "r.json"
    code, _, err = run_cli("eval", "--model", "tiny-opt", "--eval", "wiki,news:val", "--seqlen", "64",
                           "--eval-windows", "2", "--out", out, "--no-progress")
    assert code == 0, err
    rec = json.loads(out.read_text())
    assert set(rec["ppl"]) == {"wiki", "news:val"}
    assert rec["protocol"]["seqlen"] == 64 and rec["protocol"]["eval"]["wiki"]["windows"] == 2
    assert "transformers" in rec["versions"] and rec["seconds"] > 0


@pytest.mark.slow
def test_embedded_model_perplexity_matches_transformers_loss(smollm2):
    from d2p_helpers.evaluate import perplexity
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in model.parameters()) == 134_515_008
    win = eval_windows(tok, "wiki", 1024, 2)
    ours = perplexity(model, win.ids, progress=False)
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in win.ids]
    ref = math.exp(sum(losses) / len(losses))
    assert abs(ours - ref) / ref < 1e-4
    assert 10 < ours < 40, ours


def test_readme_tables_are_generated_from_results():
    from studies.readme import BLOCKS, PAGES, headline, render
    assert (ROOT / BLOCKS["headline"]).read_text() == headline(), "results/headline.md is stale"
    for page, names in PAGES.items():
        text = (ROOT / page).read_text()
        assert render(text, names) == text, f"{page} tables are stale: run `python -m studies.readme`"
        for name in names:       # every block is present, and an emptied block is filled again
            assert f"<!-- {name}:start -->" in text and f"<!-- {name}:end -->" in text
            filled = render(f"<!-- {name}:start -->\n<!-- {name}:end -->", [name])
            assert f"`{BLOCKS[name]}`" in filled and (("_From" in filled) == (ROOT / BLOCKS[name]).exists())
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and len(readme.splitlines()) <= 220       # a front door, not a wall
