"""Bad input fails fast: one line on stderr, exit status 2, no traceback, nothing written, and, where it
can be checked up front, before any model is loaded (load_model is replaced by a trap that fails the test).

Three entry points: `d2p` (in-process, and twice as a real process), `prune()` and the notebook runner."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAST_S = 5.0          # in-process: no interpreter start-up, no model, so a check takes well under a second


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "latin1.txt").write_bytes("café, naïve, déjà vu. ".encode("latin-1") * 200)
    (d / "utf16.txt").write_text("some text " * 200, encoding="utf-16")
    (d / "short.txt").write_text("tiny", encoding="utf-8")
    (d / "notmodel").mkdir()
    (d / "notmodel" / "config.json").write_text('{"hidden_size": 8}')
    (d / "emptydir").mkdir()
    (d / "afile").write_text("x")
    (d / "others").mkdir()
    (d / "others" / "notes.txt").write_text("keep me")
    (d / "outdir").mkdir()
    return d


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the error had to come before it."""
    import d2p_helpers.models as models

    def trap(*a, **k):
        raise AssertionError("a model was loaded before the bad input was refused")
    monkeypatch.setattr(models, "load_model", trap)


PRUNE = ["prune", "--model", "tiny-llama", "--method", "wanda", "--sparsity", "0.5", "--nsamples", "2",
         "--seqlen", "32", "--eval", "wiki", "--eval-windows", "2", "--no-progress"]
EVAL = ["eval", "--model", "tiny-llama", "--eval", "wiki", "--seqlen", "32", "--eval-windows", "2", "--no-progress"]


def _override(base, flag, value):
    args = list(base)
    if flag in args:
        i = args.index(flag)
        args[i + 1] = value
    else:
        args += [flag] + ([value] if value is not None else [])
    return args


# (case id, base command, flag, value, words the message must hold)
UP_FRONT = [
    ("calib-latin1", PRUNE, "--calib", "{d}/latin1.txt", ["not UTF-8", "iconv"]),
    ("calib-utf16", PRUNE, "--calib", "{d}/utf16.txt", ["UTF-16"]),
    ("calib-missing", PRUNE, "--calib", "{d}/nope.txt", ["not found"]),
    ("calib-too-short", PRUNE, "--calib", "{d}/short.txt", ["at most 4 tokens", "need 33"]),
    ("calib-hub-offline", PRUNE, "--calib", "c4", ["HF_HUB_OFFLINE"]),
    ("eval-latin1", PRUNE, "--eval", "{d}/latin1.txt", ["evaluation", "not UTF-8"]),
    ("eval-unknown-text", EVAL, "--eval", "wikipedia", ["unknown text 'wikipedia'"]),
    ("eval-bad-split", EVAL, "--eval", "wiki:train", ["unknown split"]),
    ("model-no-model-type", PRUNE, "--model", "{d}/notmodel", ["model_type"]),
    ("model-empty-folder", PRUNE, "--model", "{d}/emptydir", ["not a model"]),
    ("model-is-a-file", EVAL, "--model", "{d}/afile", ["is a file"]),
    ("model-gguf-missing", EVAL, "--model", "{d}/m.gguf", ["GGUF file not found"]),
    ("model-unknown-offline", PRUNE, "--model", "no-such-model", ["unknown model", "offline choices"]),
    ("device-unknown", PRUNE, "--device", "tpu", ["unknown device 'tpu'"]),
    ("save-is-a-file", PRUNE, "--save", "{d}/afile", ["is a file"]),
    ("save-folder-of-other-files", PRUNE, "--save", "{d}/others", ["folder of other files"]),
    ("out-folder-missing", PRUNE, "--out", "{d}/missing/rec.json", ["does not exist"]),
    ("out-is-a-folder", PRUNE, "--out", "{d}/outdir", ["is a folder"]),
    ("method-unknown", PRUNE, "--method", "obs", ["unknown method 'obs'"]),
    ("sparsity-out-of-range", PRUNE, "--sparsity", "1.5", ["sparsity must be in [0, 1)"]),
    ("pattern-malformed", PRUNE, "--pattern", "2-4", ["2-4"]),
    ("frozen-with-wanda", PRUNE, "--frozen", "q", ["frozen applies to method d2prune"]),
    ("owl-with-nm", _override(PRUNE, "--method", "sparsegpt"), "--layer-sparsity", "owl", ["owl is for unstructured"]),
    ("zeroshot-unknown", EVAL, "--zeroshot", "mmlu", ["unknown zero-shot task"]),
    ("seqlen-too-small", EVAL, "--seqlen", "1", ["--seqlen must be >= 2"]),
    ("nsamples-int", PRUNE, "--nsamples", "many", ["invalid int value"]),
]
if not __import__("torch").cuda.is_available():
    UP_FRONT.append(("device-cuda-absent", PRUNE, "--device", "cuda", ["no CUDA GPU", "--device cpu"]))


def _case_args(base, flag, value, d):
    args = [a.replace("{d}", str(d)) for a in base]
    if flag == "--pattern":                 # N:M replaces --sparsity (they exclude each other)
        i = args.index("--sparsity")
        del args[i:i + 2]
    if flag == "--layer-sparsity":          # OWL with an N:M pattern
        i = args.index("--sparsity")
        args[i:i + 2] = ["--pattern", "2:4"]
    return _override(args, flag, value.replace("{d}", str(d)))


def _assert_one_line(code, err, expected_code=2):
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", UP_FRONT, ids=[c[0] for c in UP_FRONT])
def test_cli_refuses_before_any_model_load(case, bad, run_cli, no_model_load):
    _, base, flag, value, words = case
    args = _case_args(base, flag, value, bad)
    out = bad / f"record-{case[0]}.json"
    if "--out" not in args:
        args += ["--out", str(out)]
    before = sorted(p.name for p in bad.rglob("*"))
    t0 = time.perf_counter()
    code, stdout, err = run_cli(*args)
    elapsed = time.perf_counter() - t0
    line = _assert_one_line(code, err)
    assert line.startswith("d2p: error: ")
    for w in words or []:
        assert w in line, line
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"
    assert not out.exists()
    assert sorted(p.name for p in bad.rglob("*")) == before      # nothing written, nothing deleted
    assert (bad / "others" / "notes.txt").read_text() == "keep me"


def test_cli_bad_text_that_needs_the_tokenizer_fails_before_pruning(bad, run_cli, monkeypatch, tmp_path):
    """A text that passes the byte bound but has too few tokens for one evaluation window: refused once it is
    tokenized, before pruning starts (the prune entry is a trap)."""
    import d2p_helpers.prune as prune_pkg
    monkeypatch.setattr(prune_pkg, "prune", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pruned")))
    few = tmp_path / "few.txt"
    few.write_text("word " * 20, encoding="utf-8")       # 100 bytes, about 20 tokens, seqlen 32
    out = tmp_path / "rec.json"
    code, _, err = run_cli(*_override(PRUNE, "--eval", str(few)), "--out", str(out))
    line = _assert_one_line(code, err)
    assert "fewer than one window of 32" in line
    assert not out.exists()


def test_python_api_refuses_before_any_work(bad, monkeypatch):
    """prune() raises PruneError (one line) before calibration capture starts."""
    import d2p_helpers.prune.engine as engine
    from d2p_helpers.models import load_model
    from d2p_helpers.prune import PruneError, prune
    model, tok = load_model("tiny-llama")
    monkeypatch.setattr(engine, "_capture", lambda *a, **k: (_ for _ in ()).throw(AssertionError("capture ran")))
    cases = [
        (dict(method="nosuch", sparsity=0.5), "unknown method"),
        (dict(method="wanda", sparsity=0.5, calib=str(bad / "latin1.txt")), "not UTF-8"),
        (dict(method="wanda", sparsity=0.5, calib=str(bad / "short.txt")), "at most 4 tokens"),
        (dict(method="wanda", sparsity=0.5, device="tpu"), "unknown device"),
        (dict(method="wanda", sparsity=0.5, bogus=1), "unknown option(s) bogus"),
        (dict(method="wanda", pattern="2:4", layer_sparsity="owl"), "owl is for unstructured"),
        (dict(method="wanda", sparsity=0.5, block_tune=50.0), "block_tune must be a whole number, got 50.0"),
        (dict(method="wanda", sparsity=0.5, refine="dsnot", refine_iters=True), "refine_iters must be a whole"),
    ]
    for kwargs, words in cases:
        t0 = time.perf_counter()
        with pytest.raises(PruneError) as exc:
            prune(model, tokenizer=tok, nsamples=2, seqlen=32, progress=False, **kwargs)
        assert words in str(exc.value) and "\n" not in str(exc.value), (kwargs, exc.value)
        assert time.perf_counter() - t0 < FAST_S


NOTEBOOK_CASES = [
    ("unknown-notebook", ["07_no_such_notebook"], "unknown notebook '07_no_such_notebook'"),
    ("unknown-parameter", ["00_setup_and_data", "-p", "windows", "4"], "has no parameter 'windows'"),
    ("ill-typed-int", ["00_setup_and_data", "-p", "seqlen", "long"], "expects int"),
    ("ill-typed-float", ["03_prune_opt125m_step_by_step", "-p", "sparsity", "true"], "expects float"),
    ("ill-typed-list", ["06_method_comparison", "-p", "seeds", "3"], "expects list"),
    ("second-notebook-unknown", ["00_setup_and_data", "99_nope"], "unknown notebook '99_nope'"),
    ("parameter-missing-in-one", ["00_setup_and_data", "03_prune_opt125m_step_by_step", "-p", "block_index", "2"],
     "00_setup_and_data has no parameter 'block_index'"),
    ("unknown-flag", ["00_setup_and_data", "--windows", "4"], "unrecognized arguments"),
]


@pytest.mark.parametrize("case", NOTEBOOK_CASES, ids=[c[0] for c in NOTEBOOK_CASES])
def test_notebook_runner_refuses_before_any_kernel(case, tmp_path, capsys, monkeypatch):
    import papermill

    from d2p_helpers import notebooks_run
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("a kernel was started")))
    _, argv, words = case
    t0 = time.perf_counter()
    try:
        code = notebooks_run.main(argv + ["--out", str(tmp_path / "out")])
    except SystemExit as exc:
        code = exc.code
    line = _assert_one_line(code, capsys.readouterr().err)
    assert line.startswith("notebooks_run: error: ") and words in line, line
    assert time.perf_counter() - t0 < FAST_S
    assert not (tmp_path / "out").exists()


def test_notebook_runner_keeps_string_parameters_as_typed():
    """`-p calib 42` is the text "42" for a notebook whose calib is a string, an int where it is an int."""
    from d2p_helpers.notebooks_run import _as_declared, _value, check_parameters
    params = _as_declared("03_prune_opt125m_step_by_step", {"calib": _value("42"), "seqlen": _value("64")})
    assert params == {"calib": "42", "seqlen": 64}
    assert check_parameters("03_prune_opt125m_step_by_step", params) == params


def _real_process(args, timeout=60):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "D2P_THREADS": "1"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout,
                         cwd=Path(__file__).resolve().parent.parent)
    return res.returncode, res.stderr, time.perf_counter() - t0


def test_real_processes_print_one_line_and_exit_2(bad):
    """As a script or CI job sees it: interpreter start-up included, still one line and well under a model load."""
    code, err, secs = _real_process(["-m", "d2p_helpers.cli", *_case_args(PRUNE, "--calib", "{d}/latin1.txt", bad)])
    assert "not UTF-8" in _assert_one_line(code, err) and secs < 30
    code, err, secs = _real_process(["-m", "d2p_helpers.notebooks_run", "nope"])
    assert "unknown notebook" in _assert_one_line(code, err) and secs < 30


@pytest.mark.slow
def test_notebook_cell_failure_is_one_line_exit_1_with_the_executed_notebook(tmp_path):
    code, err, _ = _real_process(["-m", "d2p_helpers.notebooks_run", "00_setup_and_data", "-p", "eval_data",
                                  "nosuch", "--out", str(tmp_path)], timeout=300)
    line = _assert_one_line(code, err, expected_code=1)
    assert "00_setup_and_data: cell" in line and "DataError" in line and "full traceback in" in line
    assert (tmp_path / "00_setup_and_data.ipynb").exists()
    assert not (tmp_path / "00_setup_and_data.json").exists()


KILL_PLAN = """
import sys
from studies.runs import RunSpec, run_plan
PLAN = [("wanda", "0.5", 0), ("sparsegpt", "0.5", 0), ("wanda", "2:4", 1)]
def spec(method, setting, seed):
    return RunSpec.make(method, setting, model="tiny-llama", nsamples=4, seqlen=32, seed=seed,
                        eval=("wiki",), eval_windows=2)
run_plan(PLAN, spec, tag="kill-test")
"""


def _plan_records(cache: Path) -> dict:
    import json
    out = {}
    for path in sorted(cache.glob("*.json")):
        rec = json.loads(path.read_text())
        out[path.name] = {"ppl": rec["ppl"], "spec": rec["spec"],
                          "rows": [(r["name"], r["zeros"], r.get("rel_error")) for r in rec["per_linear"]]}
    return out


@pytest.mark.slow
def test_a_study_killed_with_sigkill_resumes_to_the_same_records(tmp_path):
    """Kill a plan's worker (and so its running `d2p` child) mid-run, start it again: the cache ends with the
    records of an uninterrupted plan, and no partial entry is left behind."""
    import signal
    root = Path(__file__).resolve().parent.parent

    def start(cache):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "D2P_RUN_CACHE": str(cache), "D2P_THREADS": "1"}
        return subprocess.Popen([sys.executable, "-c", KILL_PLAN], cwd=root, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    whole, killed = tmp_path / "whole" / "runs", tmp_path / "killed" / "runs"
    assert start(whole).wait(timeout=600) == 0
    proc = start(killed)
    deadline = time.time() + 300
    while len(list(killed.glob("*.json"))) < 1 and time.time() < deadline:   # first run stored, second started
        time.sleep(0.2)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(list(killed.glob("*.json"))) < 3
    time.sleep(0.5)                                       # the child dies with its parent (PR_SET_PDEATHSIG)
    assert start(killed).wait(timeout=600) == 0
    assert _plan_records(killed) == _plan_records(whole)
    assert len(_plan_records(whole)) == 3
    leftovers = [p.name for p in killed.parent.rglob("*") if p.is_file() and p.parent.name == "in_progress"]
    assert leftovers == [], leftovers
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]
