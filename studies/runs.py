"""One run description and one cache for every study (benchmark, q/k/v, hyper-parameters, recipes).

A run is a frozen `RunSpec`: its fields are the record's protocol and the hash of those fields is the
cache key, so a study interrupted half-way continues where it stopped, a notebook re-run reuses what a
script already measured, and a run made in-process, in a subprocess or on a Ray worker is the same run."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from d2p_helpers.record import read_json, write_json

ROOT = Path(__file__).resolve().parent.parent
# git-ignored, and lost with the machine: every study keeps its runs' records in its committed results file,
# and its worker and `--report` seed the cache from that file first (seed_cache), so a fresh clone resumes.
# D2P_RUN_CACHE moves it (the tests run whole plans in a temporary folder). Runs being measured keep their
# claim and partial record in its `in_progress/` folder.
CACHE = Path(os.environ.get("D2P_RUN_CACHE") or ROOT / "results" / "run_cache")


def in_progress_dir(cache_dir=None) -> Path:
    return Path(cache_dir or CACHE) / "in_progress"


def canonical_options(options: dict) -> dict:
    """Drop options equal to PruneConfig's defaults: the same run spelled two ways shares one cache entry."""
    from dataclasses import MISSING, fields
    from d2p_helpers.prune.config import PruneConfig
    defaults = {f.name: f.default for f in fields(PruneConfig) if f.default is not MISSING}

    def number(v):   # 1 and 1.0 are one run
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    return {k: number(v) for k, v in sorted(options.items()) if k not in defaults or defaults[k] != v}


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one prune-and-evaluate run; `method="dense"` evaluates the unpruned model."""
    method: str
    setting: str = "0"                       # "0.5" (unstructured) or "2:4"; "0" for dense
    model: str = "smollm2-135m"
    calib: str = "news"
    nsamples: int = 16
    seqlen: int = 256
    seed: int = 0
    eval: tuple = ("wiki",)
    eval_windows: int = 16
    attention_windows: int = 0
    options: tuple = ()                      # sorted (name, value) pairs of non-default PruneConfig options
    dtype: str = "float32"
    device: str = "cpu"

    @classmethod
    def make(cls, method: str, setting="0", options: dict | None = None, **protocol) -> "RunSpec":
        protocol["eval"] = tuple(protocol.get("eval", ("wiki",)))
        return cls(method=method, setting=str(setting), options=tuple(canonical_options(options or {}).items()),
                   **protocol)

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def prune_kwargs(self) -> dict:
        """prune()'s keywords; counts come back as ints (canonical_options spells every number as a float)."""
        from d2p_helpers.prune import setting_kwargs
        from d2p_helpers.prune.config import PruneConfig
        counts = {f.name for f in dataclasses.fields(PruneConfig) if f.type == "int"}
        options = {k: int(v) if k in counts and float(v).is_integer() else v for k, v in self.options}
        return {**setting_kwargs(self.setting), "calib": self.calib, "nsamples": self.nsamples,
                "seqlen": self.seqlen, "seed": self.seed, **options}

    def command(self, out: Path) -> list[str]:
        """The same run as one `d2p` process (its peak memory is then this run's own)."""
        from d2p_helpers.prune.cli_args import option_flags, setting_flags
        cmd = [sys.executable, "-m", "d2p_helpers.cli", "eval" if self.method == "dense" else "prune",
               "--model", self.model, "--eval", ",".join(self.eval), "--seqlen", str(self.seqlen),
               "--eval-windows", str(self.eval_windows), "--seed", str(self.seed), "--dtype", self.dtype,
               "--device", self.device, "--out", str(out), "--no-progress", "--threads", "1"]
        if self.attention_windows and self.method != "dense":    # against the model before pruning
            cmd += ["--attention", "--attention-windows", str(self.attention_windows)]
        if self.method != "dense":
            cmd += ["--method", self.method, *setting_flags(self.setting), "--calib", self.calib,
                    "--nsamples", str(self.nsamples), *option_flags(dict(self.options))]
        return cmd


def cache_path(spec: RunSpec, cache_dir=None) -> Path:
    return Path(cache_dir or CACHE) / f"{spec.key}.json"


def cached(spec: RunSpec, cache_dir=None) -> dict | None:
    path = cache_path(spec, cache_dir)
    return read_json(path) if path.exists() else None


def run(spec: RunSpec, cache_dir=None, progress: bool = False, cached_only: bool = False,
        in_process: bool = True) -> dict | None:
    """The run's record: from the cache when present, else measured (in this process, or as a `d2p`
    subprocess with one thread) and cached. With cached_only, None for a run not measured yet."""
    rec = cached(spec, cache_dir)
    if rec is not None or cached_only:
        return rec
    return store(measure(spec, progress, in_process), cache_dir)


def measure(spec: RunSpec, progress: bool = False, in_process: bool = True) -> dict:
    """Run it now (no cache): the record, with its spec."""
    rec = _measure_in_process(spec, progress) if in_process else _measure_as_process(spec)
    return {**rec, "spec": json.loads(json.dumps(dataclasses.asdict(spec)))}   # as the cache holds it


def store(rec: dict, cache_dir=None) -> dict:
    """Put a measured record in the cache under its spec's key (wherever it was measured)."""
    write_json(cache_path(RunSpec(**{**rec["spec"], "eval": tuple(rec["spec"]["eval"]),
                                     "options": tuple(tuple(o) for o in rec["spec"]["options"])}), cache_dir), rec)
    return rec


def _measure_in_process(spec: RunSpec, progress: bool) -> dict:
    """The same `d2p` run builder as the subprocess path (d2p_helpers.cli.run), called in this process: one
    record shape whichever way a run was made."""
    from d2p_helpers.cli import _check_common, build_parser
    from d2p_helpers.cli import run as run_cli
    argv = [a for a in spec.command(Path("unused.json"))[3:]]
    i = argv.index("--out")
    del argv[i:i + 2]                                     # nothing written: the cache stores the record
    if progress:
        argv.remove("--no-progress")
    args = build_parser().parse_args(argv)
    _check_common(args)
    return run_cli(args)


def _measure_as_process(spec: RunSpec) -> dict:
    out = in_progress_dir() / f"{spec.key}.{os.getpid()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)       # `d2p --out` wants its folder to exist
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(spec.command(out), capture_output=True, text=True, cwd=ROOT, env=env,
                         preexec_fn=_die_with_parent)
    if res.returncode != 0:
        raise RuntimeError(f"run failed ({spec.method} {spec.setting} seed {spec.seed}): {res.stderr[-1500:]}")
    rec = json.loads(out.read_text())
    out.unlink()
    return rec


def _die_with_parent() -> None:
    """In the child: a worker killed with SIGKILL takes its `d2p` run with it (Linux), leaving no orphan
    measuring a run nobody will store."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def prune_and_eval(spec: dict, cache_dir=None, attention_windows: int = 0, progress: bool = False,
                   cached_only: bool = False) -> dict | None:
    """A run from a protocol dict (model, method, sparsity|pattern, calib, nsamples, seqlen, seed, eval,
    eval_windows, options): the notebooks' spelling of `run(RunSpec.make(...))`."""
    d = dict(spec)
    setting = d.pop("pattern", None) or d.pop("sparsity", None) or "0"
    d.pop("sparsity", None)
    return run(RunSpec.make(d.pop("method"), setting, d.pop("options", {}), attention_windows=attention_windows,
                            **d), cache_dir, progress, cached_only)


def saved_results(path: str | Path, protocol: dict, key: str = "protocol") -> dict | None:
    """A study's result file when its protocol matches the caller's, else None (the notebooks then run live)."""
    path = Path(path)
    if not path.exists():
        return None
    saved = read_json(path)
    return saved if all(saved.get(key, {}).get(k) == v for k, v in protocol.items()) else None


class ResultsDisagree(ValueError):
    """Two result files report different numbers for one run (same model, method, options, seed, protocol)."""


def same_run(values: dict, what: str, rel: float = 1e-4) -> float:
    """The one number several result files report for the same run ({source: value}); raises ResultsDisagree,
    naming every source, when they differ: one of the studies is older than the engine and must be rerun.
    `rel` allows what another torch build's float rounding moves a perplexity by, nothing more."""
    vals = list(values.values())
    if max(vals) - min(vals) > rel * max(abs(v) for v in vals):
        raise ResultsDisagree(f"{what}: " + ", ".join(f"{k} says {v:.6g}" for k, v in values.items())
                              + " — the same run cannot have two values; rerun the older study")
    return vals[0]


def seed_cache(pairs, cache_dir=None) -> tuple[int, int]:
    """Put committed records back in the cache: `pairs` are (the plan's spec for a record, the record). A record
    whose own spec is not the plan's (the engine's options changed since) is left out, so it gets rerun rather
    than filed under another run. Returns (added, left out)."""
    added = skipped = 0
    for spec, rec in pairs:
        if cached(spec, cache_dir) is not None:
            continue
        if rec.get("spec") != json.loads(json.dumps(dataclasses.asdict(spec))):
            skipped += 1
            continue
        write_json(cache_path(spec, cache_dir), rec)
        added += 1
    return added, skipped


def seed_cache_from(path, coords_key: str, spec_of, tag: str) -> int:
    """seed_cache from a committed results file whose records carry their plan coordinates under `coords_key`
    (a dict `spec_of` takes as keywords; a record `spec_of` refuses with KeyError is not this plan's). Says how
    many records were left out; returns how many were added."""
    path = Path(path)
    if not path.exists():
        return 0
    pairs = []
    for rec in read_json(path).get("records", []):
        try:
            spec = spec_of(**rec[coords_key])
        except KeyError:
            continue
        pairs.append((spec, {k: v for k, v in rec.items() if k != coords_key}))
    added, skipped = seed_cache(pairs)
    if skipped:
        print(f"[{tag}] {skipped} records in {path.name} are not this plan's runs (their spec differs): rerun")
    return added


def refuse_a_shrinking_report(path: Path, present: int, saved_present: int) -> None:
    """A study's `--report` from a cache that holds fewer runs than its committed result file (a fresh clone's
    cache is empty) would overwrite measured cells with nothing: one line, exit 2."""
    if present < saved_present:
        print(f"error: the run cache holds {present} of the {saved_present} runs in {Path(path).name}; seed it "
              "first, or re-render the saved results with --from-saved", file=sys.stderr)
        sys.exit(2)


def claim(spec: RunSpec, cache_dir=None) -> Path | None:
    """Mark a run as being measured by this process, so that several workers can share one plan; None when a
    live process holds it already. A claim whose process is gone (a killed worker) is taken over."""
    path = in_progress_dir(cache_dir) / f"{spec.key}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return None                          # a live worker has it
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)         # stale: its worker died; so do its partial outputs
                for partial in path.parent.glob(f"*{spec.key}.*"):
                    if partial.suffix != ".claim":
                        partial.unlink(missing_ok=True)
                continue
            except PermissionError:
                return None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return path
    return None


def run_plan(todo: list[tuple], spec_of, limit_minutes: float | None = None, tag: str = "runs") -> None:
    """Measure every planned run not yet cached, in order, each as a one-thread `d2p` process; stop starting
    new runs after `limit_minutes` (a study is finished over several sittings). Start the same command again
    beside it and the two share the plan: each run is claimed by one worker."""
    t0 = time.time()
    for i, coords in enumerate(todo, 1):
        spec = spec_of(*coords)
        if cached(spec) is not None:
            continue
        if limit_minutes and (time.time() - t0) / 60 > limit_minutes:
            print(f"[{tag}] time limit reached; {sum(cached(spec_of(*c)) is None for c in todo)} runs left")
            return
        held = claim(spec)
        if held is None:
            continue
        try:
            if cached(spec) is None:                 # another worker may have finished it meanwhile
                print(f"[{tag}] {i}/{len(todo)} " + " ".join(map(str, coords)), flush=True)
                run(spec, in_process=False)
        finally:
            held.unlink(missing_ok=True)
    left = sum(cached(spec_of(*c)) is None for c in todo)
    print(f"[{tag}] {len(todo) - left} of {len(todo)} runs present ({(time.time() - t0) / 60:.1f} min this call)"
          + (f"; {left} held by other workers" if left else ""))
