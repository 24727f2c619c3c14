"""The benchmark scripts people run on other machines: what they do without a GPU, and what they record."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _run(args, tmp_path, **env):
    return subprocess.run([sys.executable, str(ROOT / "studies" / "paper_protocol.py"), "--out", str(tmp_path / "pp"),
                           *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=900)


@pytest.mark.slow
def test_paper_protocol_without_cuda_says_what_it_would_do_and_writes_nothing(tmp_path):
    r = _run([], tmp_path, CUDA_VISIBLE_DEVICES="")
    assert r.returncode == 0 and "no CUDA device" in r.stdout and "--nsamples 128 --seqlen 2048" in r.stdout
    assert not (tmp_path / "pp").exists()
    bad = _run(["--methods", "sparsegpt,nope"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope" in bad.stderr


@pytest.mark.slow
def test_paper_protocol_records_every_substitution(tmp_path):
    r = _run(["--device", "cpu", "--dtype", "float32", "--methods", "wanda", "--settings", "0.5", "--nsamples", "2",
              "--seqlen", "32", "--eval-windows", "1"], tmp_path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "pp" / "paper_protocol.json").read_text())
    assert set(rec["substituted"]) == {"model", "calib", "eval"}
    assert rec["protocol"]["model"] == "smollm2-135m" and rec["records"][0]["ppl"]["wiki"] > 1
    assert "substituted model: facebook/opt-125m -> smollm2-135m" in r.stdout
    assert "paper OPT-125M Wanda | 38.88" in (tmp_path / "pp" / "paper_protocol.md").read_text()


def test_gpu_transfer_parts_join_to_the_same_bytes_and_refuse_corruption(tmp_path):
    from studies.gpu_transfer import pack, unpack
    src = tmp_path / "model.gguf"
    src.write_bytes(os.urandom(3 * (1 << 20) + 123))
    m = pack(src, tmp_path / "t", part_mib=1)
    assert len(m["parts"]) == 4 and all(p["bytes"] <= 1 << 20 for p in m["parts"])
    assert unpack(tmp_path / "t").read_bytes() == src.read_bytes()
    (tmp_path / "t" / "part-2").write_bytes(b"x")
    with pytest.raises(SystemExit, match="part-2 is corrupt"):
        unpack(tmp_path / "t")
    (tmp_path / "t" / "part-3").unlink()
    with pytest.raises(SystemExit, match="not here yet: part-3"):
        unpack(tmp_path / "t")


def _fake_recipe_table(settings, wiki_of):
    """A recipe-study table where every config ran at seed 0 with made-up perplexities."""
    from studies import recipes
    tab = {}
    for i, s in enumerate(settings):
        for j, label in enumerate(recipes.configs(s)):
            val = 100.0 + 7 * j + i
            tab.setdefault(s, {})[label] = {"wiki:val": [val], "news:val": [val * 0.5], "wiki": [wiki_of(label)],
                                            "news:test": [wiki_of(label)], "seeds": [0], "prune_seconds": [10.0],
                                            "stage_seconds": [{}]}
    return tab


def test_recipe_preset_is_chosen_on_validation_only_and_runs_first_with_its_seeds():
    from studies import recipes
    settings = ["0.5", "0.7", "2:4"]
    # the preset is its composition with the least-squares step by conjugate gradient, nothing else changed
    for s in settings:
        method, opts = recipes.configs(s)[recipes.PRESET]
        basis_method, basis_opts = recipes.configs(s)[recipes.PRESET_BASIS]
        assert method == basis_method and opts == {**basis_opts, "reconstruct": "cg"}
        assert ("layer_sparsity" in opts) == (":" not in s)          # no OWL at N:M
    # make one composition best on validation; the reported texts say the opposite and must not matter
    target = "sparsegpt+dsnot"
    a = _fake_recipe_table(settings, wiki_of=lambda label: 1.0 if label != target else 1e6)
    for s in settings:
        a[s][target]["wiki:val"], a[s][target]["news:val"] = [1.0], [1.0]
    b = _fake_recipe_table(settings, wiki_of=lambda label: 1e6 if label != target else 1.0)
    for s in settings:
        b[s][target]["wiki:val"], b[s][target]["news:val"] = [1.0], [1.0]
    pa, pb = recipes.choose_preset(a), recipes.choose_preset(b)
    assert pa["chosen_on_validation"] == pb["chosen_on_validation"] == target
    assert pa["flags"][:2] == ["--method", "d2prune"] and "cg" in pa["flags"]
    assert set(pa["cg_over_exact_validation"]) == set(settings)
    # plan: no duplicates; the preset's seed 0 comes before any seed-1 run, and every peer gets three seeds
    plan = recipes.plan()
    assert len(plan) == len(set(plan))
    first_seed1 = next(i for i, r in enumerate(plan) if r[2] == 1)
    assert all(plan.index((recipes.PRESET, s, 0)) < first_seed1 for s in settings)
    for s in settings:
        for label in (*recipes.PEERS, recipes.PRESET):
            assert {seed for lab, st, seed in plan if lab == label and st == s} == {0, 1, 2}


def test_plan_workers_claim_each_run_once_and_take_over_a_dead_workers_claim(tmp_path):
    from studies.runs import RunSpec, claim
    spec = RunSpec.make("wanda", "0.5", model="tiny-llama", nsamples=2, seqlen=32)
    cache = tmp_path / "runs"
    first = claim(spec, cache)
    assert first is not None and first.read_text() == str(os.getpid())
    assert claim(spec, cache) is None                       # held by a live process (this one)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    first.write_text(dead.stdout.strip())                   # as if its worker had been killed
    again = claim(spec, cache)
    assert again == first and again.read_text() == str(os.getpid())
    again.unlink()
    assert claim(spec, cache) is not None


def test_readme_preset_command_uses_the_recorded_preset_flags():
    from studies import recipes
    readme = (Path(__file__).resolve().parent.parent / "docs" / "RESULTS.md").read_text()
    block = readme[readme.index("## Beyond the paper"):readme.index("<!-- recipes:start -->")]
    command = " ".join(block[block.index("d2p prune"):block.index("```", block.index("d2p prune"))].split()).replace("\\ ", "")
    method, options = recipes.configs("0.7")[recipes.PRESET]
    from d2p_helpers.prune.cli_args import option_flags
    flags = ["--method", method, *option_flags(options)]
    pairs = [" ".join(flags[i:i + 2]) for i in range(0, len(flags), 2)]
    assert all(p in command for p in pairs), (pairs, command)


@pytest.mark.slow
def test_gpu_paper_protocol_dry_run_on_the_cpu_cuts_its_plan_to_the_budget_and_says_so(tmp_path):
    """The GPU script through its own code path on a tiny model: records and cut runs add up to the plan."""
    out = tmp_path / "gpu"
    out.mkdir()
    r = subprocess.run([sys.executable, "-m", "studies.gpu_paper_protocol", "--device", "cpu", "--dtype", "float32",
                        "--model", "tiny-llama", "--nsamples", "2", "--seqlen", "32", "--eval-windows", "1",
                        "--budget-s", "25", "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((out / "gpu.json").read_text())
    done = [[x["label"], x["setting"], x["seed"]] for x in rec["records"]]
    assert done + [list(c) for c in rec["cut"]] == [list(p) for p in rec["planned"]]
    assert done[0] == ["wanda", "2:4", 0] and all(x["ppl"]["wiki"] > 1 for x in rec["records"])
    assert rec["gemm"]["fp16"].get("skipped")                       # no CPU kernel: said, not faked
    md = (out / "gpu.md").read_text()
    assert f"{len(done)} of {len(rec['planned'])} planned runs" in md
    bad = subprocess.run([sys.executable, "-m", "studies.gpu_paper_protocol", "--device", "cuda:7", "--out",
                          str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if not __import__("torch").cuda.is_available():
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no CUDA GPU" in bad.stderr


def test_a_run_has_one_record_shape_in_process_and_as_a_process(tmp_path):
    """studies.runs.measure builds its record with the CLI's run builder either way: same keys, same protocol,
    same perplexity (the tiny model is deterministic on one thread)."""
    from studies.runs import RunSpec, measure
    spec = RunSpec.make("wanda", "0.5", {"reconstruct": "cg"}, model="tiny-llama", nsamples=2, seqlen=32,
                        eval=("wiki",), eval_windows=1, attention_windows=1)
    inside, outside = measure(spec, in_process=True), measure(spec, in_process=False)
    assert set(inside) == set(outside) and "protocol" in inside and "attention" in inside
    def untimed(protocol):                     # the evaluation's seconds differ run to run
        return {**protocol, "eval": {k: {x: y for x, y in v.items() if x != "seconds"}
                                     for k, v in protocol["eval"].items()}}
    assert untimed(inside["protocol"]) == untimed(outside["protocol"]) and inside["options"] == outside["options"]
    assert inside["ppl"]["wiki"] == pytest.approx(outside["ppl"]["wiki"], rel=1e-6)
    assert [r["zeros"] for r in inside["per_linear"]] == [r["zeros"] for r in outside["per_linear"]]


def test_the_one_timing_loop_interleaves_jobs_on_fresh_copies():
    from d2p_helpers.models import load_model
    from studies.timing import interleaved
    dense, tok = load_model("tiny-llama")
    before = [p.detach().clone() for p in dense.parameters()]
    jobs = {"a": dict(method="wanda", sparsity=0.5, nsamples=2, seqlen=32),
            "b": dict(method="sparsegpt", pattern="2:4", nsamples=2, seqlen=32, reconstruct="cg")}
    out = interleaved(dense, tok, jobs, repeats=2)
    assert {k: len(v) for k, v in out.items()} == {"a": 2, "b": 2}
    assert all(r["wall"] >= r["prune_seconds"] > 0 for rs in out.values() for r in rs)
    assert "reconstruct" in out["b"][0]["stages"] and out["a"][0]["stages"] == {}
    assert all(torch.equal(a, b) for a, b in zip(before, dense.parameters()))      # the dense model untouched


def test_a_cache_entry_written_before_the_renames_reads_with_todays_keys(tmp_path):
    """Old records spelled a linear's rows `per_layer` and attention rows per `layer`: they still read."""
    import json
    from studies.runs import RunSpec, cache_path, cached
    spec = RunSpec.make("d2prune", "0.5", model="tiny-llama", nsamples=2, seqlen=32)
    old = {"per_layer": [{"name": "q_proj", "zeros": 3}], "frozen_per_layer": ["v", "k"],
           "attention": {"per_layer": [{"layer": 0, "kl": 0.5}], "mean_kl": 0.5}}
    path = cache_path(spec, tmp_path)
    path.write_text(json.dumps(old))
    rec = cached(spec, tmp_path)
    assert rec["per_linear"] == old["per_layer"] and rec["frozen_per_block"] == ["v", "k"]
    assert rec["attention"]["per_block"] == [{"block": 0, "kl": 0.5}] and "per_layer" not in json.dumps(rec)


def test_the_recipe_report_refuses_to_overwrite_measured_cells_from_an_emptier_cache(tmp_path):
    """results/recipes.json holds cells whose runs a fresh clone's cache lacks: `--report` refuses (exit 2,
    one line, nothing written); `--from-saved` is the way to re-render them."""
    root = Path(__file__).resolve().parent.parent
    before = (root / "results" / "recipes.json").read_bytes()
    env = {**os.environ, "D2P_RUN_CACHE": str(tmp_path / "empty"), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "studies.recipes", "--report"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--from-saved" in res.stderr
    assert (root / "results" / "recipes.json").read_bytes() == before


def test_a_fresh_cache_is_seeded_from_the_committed_records_and_refuses_a_changed_spec(tmp_path):
    """The run cache dies with the machine: a study's committed records go back in (under the plan's key) so a
    new worker resumes instead of rerunning; a record whose spec is not the plan's is left out, not misfiled."""
    import dataclasses
    from studies.runs import RunSpec, cached, seed_cache
    a = RunSpec.make("wanda", "0.5", model="tiny-llama", nsamples=2, seqlen=32)
    b = RunSpec.make("sparsegpt", "0.5", model="tiny-llama", nsamples=2, seqlen=32)
    rec_a = {"ppl": {"wiki": 12.5}, "spec": json.loads(json.dumps(dataclasses.asdict(a)))}
    rec_b = {"ppl": {"wiki": 9.0}, "spec": {**json.loads(json.dumps(dataclasses.asdict(b))), "nsamples": 4}}
    assert seed_cache([(a, rec_a), (b, rec_b)], tmp_path) == (1, 1)
    assert cached(a, tmp_path)["ppl"] == {"wiki": 12.5} and cached(b, tmp_path) is None
    assert seed_cache([(a, rec_a)], tmp_path) == (0, 0)           # present already: untouched


def test_the_paper_n_results_file_seeds_every_one_of_its_runs_into_an_empty_cache(tmp_path, monkeypatch):
    """Every committed paper-N record maps back to its plan's spec: a fresh clone's worker reruns none of them."""
    import studies.runs as runs
    from studies import bench
    monkeypatch.setattr(runs, "CACHE", tmp_path)
    saved = dict(vars(bench))
    try:
        bench.use_protocol("paper-n")
        path = Path(bench.ROOT) / "results" / "bench_paper_n.json"
        n = len(json.loads(path.read_text())["records"])
        assert bench.import_records(path) == n and len(bench.load_records()) == n
    finally:
        for k in ("PROTOCOL", "METHODS", "METHOD_SPECS", "SETTINGS", "RUN_ORDER", "SEEDED", "NAME", "TITLE"):
            setattr(bench, k, saved[k])


def test_error_correction_compares_its_choice_with_the_best_peer_on_each_calibration_text():
    from studies import error_correction as ec
    # --sequential is out of the preset pool by its cost; every pool member is a candidate
    assert ec.PRESET_POOL and all(not ec.CANDIDATES[c][1].get("sequential") for c in ec.PRESET_POOL)
    assert set(ec.PRESET_POOL) < set(ec.CANDIDATES)
    cell = lambda wiki, news, seeds: {"wiki": wiki, "news:test": news, "seeds": seeds}   # noqa: E731
    tab = {"2:4": {"sparsegpt": cell([10.0, 11.0, 12.0], [5.0, 5.0, 5.0], [0, 1, 2]),
                   "wanda": cell([20.0, 21.0], [4.0, 4.1], [0, 1]),
                   "sparsegpt@mix": cell([9.0, 9.5, 9.9], [6.0, 6.0, 6.0], [0, 1, 2]),
                   "noqkv+dense+tune@mix": cell([8.0, 8.8, 9.6], [5.0, 5.1, 4.9], [0, 1, 2])}}
    rows = {(r["text"], r["peer_calib"]): r for r in ec.verdicts(tab, "noqkv+dense+tune@mix")}
    assert set(rows) == {(t, c) for t in ec.REPORTED for c in ("news", ec.MIX)}
    assert rows[("wiki", "news")]["peer"] == "sparsegpt" and rows[("news:test", "news")]["peer"] == "wanda"
    assert rows[("wiki", ec.MIX)]["peer"] == "sparsegpt@mix"
    assert rows[("wiki", "news")]["paired"]["mean"] == pytest.approx((0.8 + 0.8 + 0.8) / 3)
    assert rows[("wiki", "news")]["verdict"] == "**ahead**"                   # 0.8 on every seed
    assert rows[("news:test", "news")]["paired"]["n"] == 2                   # wanda has two seeds
    # the one-process cost is shown only for the label and protocol it was measured for
    assert ec.saved_cost("no-such-label") is None


def test_cost_against_times_a_candidate_and_its_baseline_in_one_process_and_says_so():
    from studies.runs import RunSpec
    from studies.timing import cost_against, cost_text

    def spec(label, setting, seed):
        method, options = {"base": ("wanda", {}), "cand": ("sparsegpt", {"reconstruct": "cg"})}[label]
        calib = "news+self" if label == "cand" else "news"
        return RunSpec.make(method, setting, options, seed=seed, model="tiny-llama", nsamples=2, seqlen=32,
                            calib=calib)
    cost = cost_against(spec, ("2:4", "0.5"), "base", "cand")
    assert set(cost["ratio"]) == {"2:4", "0.5"}
    for s, r in cost["ratio"].items():
        runs = cost["seconds"][s]
        assert r == pytest.approx(runs["cand"][0]["prune"] / runs["base"][0]["prune"])
        assert "reconstruct" in runs["cand"][0]["stages"] and runs["base"][0]["stages"] == {}
    text = cost_text(cost["seconds"], cost["ratio"], "base", "cand")
    assert text.startswith("2:4: **") and "reconstruct" in text and "0.5: **" in text
    # the self text is generated by the first setting's run and read back by the second (same model and seed)
    first, second = (cost["seconds"][s]["cand"][0]["self_text"] for s in ("2:4", "0.5"))
    assert first["cache"] == "written" and second["cache"] == "read"
    gen = second["generate_seconds"]
    with_gen = (cost["seconds"]["0.5"]["cand"][0]["prune"] + gen) / cost["seconds"]["0.5"]["base"][0]["prune"]
    assert f"generating the self text took {first['generate_seconds']:.0f} s of it" in text.split("0.5:")[0]
    assert "read from the cache" in text.split("0.5:")[1] and f"{with_gen:.2f}× with it" in text


def test_a_specs_prune_keywords_give_counts_back_as_ints_and_keep_fractions():
    """The cache key spells every number as a float (1 and 1.0 are one run); prune() gets its counts as ints."""
    from studies.runs import RunSpec
    spec = RunSpec.make("d2prune", "2:4", {"block_tune": 50, "block_tune_lr": 3e-3, "reconstruct_iters": 7})
    assert dict(spec.options)["block_tune"] == 50.0 and isinstance(dict(spec.options)["block_tune"], float)
    kw = spec.prune_kwargs()
    assert kw["block_tune"] == 50 and type(kw["block_tune"]) is int and type(kw["reconstruct_iters"]) is int
    assert kw["block_tune_lr"] == 3e-3 and kw["pattern"] == "2:4"
