"""Every notebook runs headless through papermill with small parameters and writes its JSON record."""
from pathlib import Path

import nbformat
import pytest

from d2p_helpers.notebooks_run import NOTEBOOKS, execute, record_runtime, runtime_text, runtimes, warning_lines

TINY = {"model": "tiny-llama", "nsamples": 4, "seqlen": 64, "eval_windows": 2}
# Small parameters per notebook; assertions below read the JSON each notebook writes.
TEST_PARAMETERS = {
    "00_setup_and_data": {"model": "tiny-llama", "seqlen": 128, "eval_windows": 1},
    "01_dual_taylor_derivation": {"model": "smollm2-135m", "nsamples": 2, "seqlen": 64},
    "02_delta_x_lambda_check": {"model": "smollm2-135m", "nsamples": 2, "seqlen": 64},
    "03_prune_opt125m_step_by_step": {**TINY, "model": "tiny-opt"},
    "04_attention_kl": {**TINY, "attention_windows": 1},
    "05_qkv_update_search": {**TINY, "sparsities": [0.5], "use_results": False},
    "06_method_comparison": {**TINY, "use_results": False, "settings": ["0.5", "2:4"]},
    "07_zero_shot": {**{k: v for k, v in TINY.items() if k != "eval_windows"}, "limit": 4,
                     "tasks": ["piqa", "hellaswag"]},
    "08_scale_to_llama": {"model": "tiny-llama3-gqa", "nsamples": 2, "seqlen": 64, "eval_windows": 1},
    "09_deit_vision": {"model": "tiny-timm-vit", "nsamples": 2, "knn_train": 30, "knn_test": 10, "sparsities": [0.5],
                       "methods": ["wanda", "d2prune"]},
    "10_sparse_speedup": {"model": "tiny-llama", "nsamples": 2, "seqlen": 64},
    "11_hyperparameters": {**TINY, "use_results": False, "seeds": [0, 1], "lambda_grid": [0.0, 1.0],
                           "s_values": [500, "auto"], "n_values": [2, 4], "sparsities": [0.5]},
    "12_lora_recovery": {"model": "tiny-llama", "nsamples": 2, "seqlen": 64, "eval_windows": 1, "steps": 2,
                         "train_seqlen": 32, "zeroshot_limit": 4, "zeroshot_tasks": ["piqa"], "use_results": False,
                         "methods": ["sparsegpt", "d2prune"]},
    "13_beyond_the_paper": {"model": "tiny-llama", "nsamples": 8, "seqlen": 64, "block_index": 1, "tune_steps": 5},
    "14_paper_claims": {"fit_nsamples": 2, "fit_seqlen": 64},
}
# every notebook ends with a computed "What we learned"
LEARNED = list(TEST_PARAMETERS)


def all_notebooks():
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_every_notebook_has_test_parameters_and_a_paired_script():
    for name in all_notebooks():
        assert name in TEST_PARAMETERS, f"add small test parameters for {name}"
        assert (NOTEBOOKS / f"{name}.py").exists(), f"{name}.ipynb has no jupytext .py pair"


@pytest.mark.parametrize("name", all_notebooks())
def test_notebook_committed_without_outputs_and_one_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [0], "exactly one parameters cell, the first code cell"
    assert nb.cells[0].cell_type == "markdown" and "What you will learn" in nb.cells[0].source
    # the .ipynb matches its .py source (edit the .py, then `make sync-notebooks`)
    import jupytext
    paired = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells], "run `make sync-notebooks`"


@pytest.mark.parametrize("name", [n for n in all_notebooks() if n in LEARNED])
def test_notebook_ends_with_what_we_learned_and_states_its_runtime(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## What we learned" in c.source]
    assert heads, "end with '## What we learned'"
    after = nb.cells[heads[-1]:]
    assert any(c.cell_type == "code" and "Markdown(" in c.source for c in after), "computed, displayed findings"
    assert any("What to try next" in c.source for c in after) and "notebook.finish" in nb.cells[-1].source
    assert any(c.cell_type == "code" and f'runtime_note("{name}")' in c.source for c in nb.cells[:4])


def test_runtime_note_reads_the_recorded_file(tmp_path):
    path = tmp_path / "runtimes.json"
    assert "not measured yet" in runtime_text("00_setup_and_data", path)
    record_runtime("00_setup_and_data", 95.04, path)
    record_runtime("03_prune_opt125m_step_by_step", 400.0, path)
    assert "95 s" in runtime_text("00_setup_and_data", path)
    assert "6.7 min" in runtime_text("03_prune_opt125m_step_by_step", path)


def image_outputs(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("name", all_notebooks())
def test_notebook_runs_headless(name, tmp_path):
    # the run cache and the verdict sheet go to tmp too: tests never write into results/ or notebooks/
    params = {**TEST_PARAMETERS[name], **_path_parameters(name, tmp_path)}
    rec = execute(name, tmp_path, params, timeout=900)
    assert rec["notebook"] == name and rec["versions"]["torch"]
    assert all(Path(f).exists() for f in rec["figures"]), rec["figures"]
    # figures are shown inline in the executed notebook (the kernel does not inherit pytest's Agg backend)
    assert image_outputs(tmp_path / f"{name}.ipynb") >= (1 if rec["figures"] else 0), "no inline image/png output"
    # progress bars render as widgets (ipywidgets installed): no tqdm text fallback, no warning of any kind
    assert not warning_lines(tmp_path / f"{name}.ipynb"), name
    m = rec["metrics"]
    if name == "00_setup_and_data":
        assert m["dense_ppl"] > 1 and m["corpus"]["wiki:test"]["articles"] == 20
    if name == "03_prune_opt125m_step_by_step":
        assert m["achieved_sparsity"] == pytest.approx(0.5, abs=0.01) and m["frozen_per_block"] == ["k", "k"]
        assert m["hand_same_mask"] is True and m["hand_max_abs_diff"] < 1e-3
    if name == "01_dual_taylor_derivation":
        assert m["second_order_rel_error_small"] < 1e-2 and m["eq9_rel_error"] < 1e-4
    if name == "02_delta_x_lambda_check":
        assert set(m["fits"]) >= {"news-wiki", "news-news (control)"}
    if name == "04_attention_kl":
        assert set(m["configs"]) >= {"all updated", "none updated", "freeze q", "freeze k", "freeze v"}
    if name == "05_qkv_update_search":
        assert len(m["rows"]) >= 8
    if name == "06_method_comparison":
        assert m["source"] == "live run" and m["two_by_two"]["0.5 wiki"]["D² on, frozen v"]["n"] == 1
    if name == "07_zero_shot":
        assert "zeroshot_mean" in m["dense"]
    if name == "08_scale_to_llama":
        assert m["memory_plans"][0]["model"] == "LLaMA-2-7B" and m["pruned_ppl"] > 1
    if name == "09_deit_vision":
        assert m["metric"] == "knn_top1" and "d2prune@0.5" in m["results"]
    if name == "11_hyperparameters":
        assert {"lambda", "s", "nsamples"} <= set(m["studies"])
    if name == "12_lora_recovery":
        assert len(m["rows"]) == 4 and all(len(r["losses"]) == 2 for r in m["rows"])
    if name == "10_sparse_speedup":
        assert m["layout_valid"] and (m["timing"].get("skipped") or m["timing"])
    if name == "14_paper_claims":
        assert len(m["claims"]) >= 8
        sheet = (tmp_path / "VERDICTS.md").read_text()
        assert all(c["claim"] in sheet for c in m["claims"]) and "does not say" in sheet
        assert {c["verdict"].split(":")[0] for c in m["claims"]} <= {"reproduced", "not reproduced", "not testable here"}


def _path_parameters(name: str, tmp_path: Path) -> dict:
    """Where a notebook would write outside its out_dir (the run cache, the verdict sheet): tmp instead."""
    import papermill as pm
    declared = pm.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
    return {**({"cache_dir": str(tmp_path / "cache")} if "cache_dir" in declared else {}),
            **({"verdicts_path": str(tmp_path / "VERDICTS.md")} if "verdicts_path" in declared else {})}


@pytest.mark.slow
@pytest.mark.parametrize("name", all_notebooks())
def test_notebook_runs_at_its_defaults_with_no_warning_text(name, tmp_path):
    """What a reading group does: the notebook at its own defaults (stored results where it reads them), to the
    end, headless, with no warning text in any output. The wall time is printed beside the recorded one (a
    benchmark, not a timed test: this machine is shared)."""
    rec = execute(name, tmp_path, _path_parameters(name, tmp_path), timeout=900)
    assert rec["notebook"] == name and all(Path(f).exists() for f in rec["figures"])
    assert not warning_lines(tmp_path / f"{name}.ipynb"), name
    recorded = runtimes().get(name, {}).get("seconds")
    print(f"{name} at its defaults: {rec['executed_seconds']:.0f} s (notebooks/runtimes.json: {recorded} s)")


def test_warning_lines_finds_each_kind_of_warning_text(tmp_path):
    """The scan the two headless tests rely on: it must see a Python warning, tqdm's fallback, a logger's
    WARNING and a printed traceback, and pass clean output."""
    nb = nbformat.v4.new_notebook()
    outs = ["clean output\nppl 23.59", "/x.py:3: UserWarning: something", "TqdmWarning: IProgress not found",
            "WARNING:root:careful", "Traceback (most recent call last):\n  File x"]
    for text in outs:
        cell = nbformat.v4.new_code_cell("pass")
        cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=text)]
        nb.cells.append(cell)
    nbformat.write(nb, str(tmp_path / "x.ipynb"))
    found = warning_lines(tmp_path / "x.ipynb")
    assert [f.split(":")[0] for f in found] == ["cell 1", "cell 2", "cell 3", "cell 4"], found


def test_test_parameters_are_declared_by_their_notebooks():
    """The runner refuses a parameter a notebook does not declare, so the test parameters must all exist."""
    import papermill as pm
    for name, params in TEST_PARAMETERS.items():
        declared = pm.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
        assert set(params) <= set(declared), (name, set(params) - set(declared))


def test_code_cells_fit_in_90_columns():
    """Code cells stay readable in a notebook's column: no code line longer than 90 characters."""
    import jupytext
    too_long = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py")):
        lines, at = path.read_text().splitlines(), 0
        for cell in jupytext.read(path).cells:
            if cell.cell_type != "code":
                continue
            for line in cell.source.splitlines():
                if len(line) > 90:
                    # the line's number in the .py source (a magic is written there as `# %magic`)
                    at = next((i for i in range(at, len(lines)) if lines[i].endswith(line)), at)
                    too_long.append(f"{path.name}:{at + 1}")
    assert not too_long, f"code lines over 90 characters: {', '.join(too_long)}"
