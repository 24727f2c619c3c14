"""Cached prune-and-evaluate runs for the studies (q/k/v choice, hyper-parameters) and notebooks.

A run is keyed by the hash of everything that defines it, so a study interrupted half-way
continues where it stopped, and a notebook re-run reuses what a script already measured."""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

from .record import versions, write_json

_MODELS: dict = {}


def spec_key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dense_model(name: str):
    """Load once per process; callers get a deep copy to prune."""
    if name not in _MODELS:
        from .models import load_model
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def prune_and_eval(spec: dict, cache_dir: str | Path | None = None, attention_windows: int = 0,
                   progress: bool = False) -> dict:
    """spec: model, method, sparsity|pattern, calib, nsamples, seqlen, seed, eval (list), eval_windows,
    options (dict). Returns the record (from the cache when present)."""
    from .attention import compare_attention
    from .data import eval_windows
    from .evaluate import perplexities
    from .prune import prune
    spec = {**spec, "attention_windows": attention_windows}
    path = Path(cache_dir) / f"{spec_key(spec)}.json" if cache_dir else None
    if path and path.exists():
        return json.loads(path.read_text())
    base, tok = dense_model(spec["model"])
    model = copy.deepcopy(base)
    t0 = time.perf_counter()
    rec = {"spec": spec}
    if spec["method"] != "dense":
        report = prune(model, spec["method"], sparsity=spec.get("sparsity"), pattern=spec.get("pattern"),
                       calib=spec["calib"], nsamples=spec["nsamples"], seqlen=spec["seqlen"], seed=spec["seed"],
                       tokenizer=tok, progress=progress, **spec.get("options", {}))
        rec.update(report.to_record())
    rec["ppl"], rec["eval"] = perplexities(model, tok, spec["eval"], spec["seqlen"], spec["eval_windows"],
                                           progress=progress)
    if attention_windows:
        win = eval_windows(tok, spec["eval"][0], spec["seqlen"], attention_windows)
        att = compare_attention(model, base, win.ids, progress=progress)
        rec["attention"] = {k: v for k, v in att.items() if k != "per_layer"} | {"per_layer": att["per_layer"]}
    rec["versions"] = versions()
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    if path:
        write_json(path, rec)
    return rec
