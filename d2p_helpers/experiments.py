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


def canonical_options(options: dict) -> dict:
    """Drop options equal to PruneConfig's defaults: the same run spelled two ways shares one cache entry."""
    from dataclasses import MISSING, fields
    from .prune.config import PruneConfig
    defaults = {f.name: f.default for f in fields(PruneConfig) if f.default is not MISSING}
    def number(v):   # 1 and 1.0 are one run
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    return {k: number(v) for k, v in options.items() if k not in defaults or defaults[k] != v}


def spec_key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dense_model(name: str):
    """Load once per process; callers get a deep copy to prune."""
    if name not in _MODELS:
        from .models import load_model
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def prune_and_eval(spec: dict, cache_dir: str | Path | None = None, attention_windows: int = 0,
                   progress: bool = False, cached_only: bool = False) -> dict | None:
    """spec: model, method, sparsity|pattern, calib, nsamples, seqlen, seed, eval (list), eval_windows,
    options (dict). Returns the record (from the cache when present)."""
    from .attention import compare_attention
    from .data import eval_windows
    from .evaluate import perplexities
    from .prune import prune
    spec = {**spec, "attention_windows": attention_windows, "options": canonical_options(spec.get("options", {}))}
    path = Path(cache_dir) / f"{spec_key(spec)}.json" if cache_dir else None
    if path and path.exists():
        return json.loads(path.read_text())
    if cached_only:
        return None
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
    rec["seconds"] = time.perf_counter() - t0
    if path:
        write_json(path, rec)
    return rec


def method_table(base: dict, methods: list[str], settings: list[str], cache_dir=None) -> dict:
    """{"method@setting": {mean, std, n}} of perplexity on base's first eval text, one seed (base["seed"]),
    in the shape of results/bench.json's table; "dense@0" is the unpruned model."""
    from .prune import setting_kwargs
    text = base["eval"][0]

    def cell(spec):
        return {"mean": prune_and_eval(spec, cache_dir)["ppl"][text], "std": 0.0, "n": 1}

    table = {"dense@0": cell({**base, "method": "dense"})}
    for s in settings:
        for m in methods:
            table[f"{m}@{s}"] = cell({**base, **setting_kwargs(s), "method": m})
    return table


QKV_CONFIGS = {"freeze q": "q", "freeze k": "k", "freeze v": "v", "all updated (none frozen)": "none",
               "no q/k/v updated (all frozen)": "all", "auto:ppl": "auto:ppl", "auto:kl": "auto:kl",
               "auto:outlier": "auto:outlier"}


def qkv_comparison(base: dict, sparsities: list[float], cache_dir=None, attention_windows: int = 2,
                   progress: bool = False, cached_only: bool = False) -> list[dict]:
    """D²Prune with every q/k/v choice and selector at each sparsity: ppl, attention KL, cost."""
    rows = []
    for sp in sparsities:
        for label, frozen in QKV_CONFIGS.items():
            rec = prune_and_eval({**base, "method": "d2prune", "sparsity": sp, "options": {"frozen": frozen}},
                                 cache_dir, attention_windows, progress, cached_only)
            if rec is None:
                continue
            chosen = rec.get("frozen_per_layer", [])
            rows.append({"sparsity": sp, "config": label, "ppl": rec["ppl"][base["eval"][0]],
                         "mean_kl": rec["attention"]["mean_kl"] if "attention" in rec else None,
                         "prune_seconds": rec["prune_seconds"], "selector_seconds": rec["selector_seconds"],
                         "frozen_per_layer": "".join({"none": "·", "qkv": "*"}.get(c, c) for c in chosen)})
    return rows


def qkv_markdown(rows: list[dict], base: dict) -> str:
    sps = sorted({r["sparsity"] for r in rows})
    lines = [f"# D²Prune: which of q/k/v to freeze (model `{base['model']}`)", "",
             f"Calibration `{base['calib']}` {base['nsamples']} × {base['seqlen']}, seed {base['seed']}; perplexity on "
             f"`{base['eval'][0]}` test ({base['eval_windows']} windows); mean attention KL(pruned ‖ dense) over layers. "
             "auto:ppl chooses on the calibration text's validation split, never the evaluation text. "
             "Generated by `studies/qkv_selectors.py`.", "",
             "| config | " + " | ".join(f"ppl {int(s * 100)}% | KL {int(s * 100)}%" for s in sps) +
             " | selector s (per run) | per-layer choice (first sparsity; · none frozen, * all three) |",
             "|---|" + "---|---|" * len(sps) + "---|---|"]
    for label in dict.fromkeys(r["config"] for r in rows):
        rs = {r["sparsity"]: r for r in rows if r["config"] == label}
        cells = []
        for s in sps:
            r = rs.get(s)
            cells += [f"{r['ppl']:.2f}" if r else "–", f"{r['mean_kl']:.4f}" if r and r["mean_kl"] is not None else "–"]
        sel = sum(r["selector_seconds"] for r in rs.values()) / len(rs)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {sel:.1f} | `{rs[sps[0]]['frozen_per_layer']}` |")
    return "\n".join(lines) + "\n"


def hparam_study(base: dict, seeds: list[int], lambda_grid: list[float], s_values: list, n_values: list[int],
                 sparsities: list[float], cache_dir=None, progress: bool = False,
                 studies: tuple = ("lambda", "s", "nsamples"), cached_only: bool = False) -> dict:
    """The paper's knob studies on one model (spec §5.8): lambda grid at the highest sparsity, s at each
    sparsity, calibration count N at the highest sparsity with the authors' and the normalised D² term.

    s_values may hold "L" (s = the calibration sequence length) and "auto" (the normalised D² term,
    d2_norm="mean", at the default s: its strength no longer depends on N or L). With cached_only,
    runs not yet in the cache are left out (a study still running in another process)."""
    top = max(sparsities)

    def run(sparsity, seed, nsamples=None, **options):
        spec = {**base, "method": "d2prune", "sparsity": sparsity, "seed": seed,
                "nsamples": nsamples or base["nsamples"], "options": options}
        rec = prune_and_eval(spec, cache_dir, 0, progress, cached_only)
        return None if rec is None else rec["ppl"][base["eval"][0]]

    def ppls(*args, **kwargs):
        return [p for p in (run(*args, seed=sd, **kwargs) for sd in seeds) if p is not None]

    out = {"lambda": [], "s": [], "nsamples": []}
    if "lambda" in studies:
        for r1 in lambda_grid:
            for r2 in lambda_grid:
                out["lambda"].append({"r1": r1, "r2": r2, "sparsity": top, "ppl": ppls(top, r1=r1, r2=r2)})
    if "s" in studies:
        for sp in sparsities:
            for s in s_values:
                if s == "auto":
                    out["s"].append({"s": s, "s_value": None, "sparsity": sp, "ppl": ppls(sp, d2_norm="mean")})
                    continue
                value = float(base["seqlen"]) if s == "L" else float(s)
                out["s"].append({"s": s, "s_value": value, "sparsity": sp, "ppl": ppls(sp, s=value)})
    if "nsamples" in studies:
        for norm in ("authors", "mean"):
            for n in n_values:
                out["nsamples"].append({"nsamples": n, "d2_norm": norm, "sparsity": top,
                                        "ppl": ppls(top, nsamples=n, d2_norm=norm)})
    for rows in out.values():
        rows[:] = [r for r in rows if r["ppl"]]
    return out


def _ms(values: list[float]) -> str:
    import statistics
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


# expected range of k independent standard normal draws (the d2 constant of control charts)
_RANGE_OF_NORMALS = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326, 6: 2.534, 7: 2.704, 8: 2.847, 9: 2.970, 10: 3.078}


def knob_effect(rows: list[dict]) -> str:
    """How far a knob moves perplexity, beside how far seed noise alone would move the same means: k means of
    n seeds each, with seed std σ, span about d2(k) · σ / √n when the knob does nothing."""
    import math
    import statistics
    rows = [r for r in rows if len(r["ppl"]) > 1]
    if len(rows) < 2:
        return "too few settings with two or more seeds to compare"
    means = [statistics.mean(r["ppl"]) for r in rows]
    sigma = math.sqrt(statistics.mean(statistics.variance(r["ppl"]) for r in rows))
    n = min(len(r["ppl"]) for r in rows)
    noise = _RANGE_OF_NORMALS[min(len(rows), 10)] * sigma / math.sqrt(n)
    lo, hi = min(means), max(means)
    verdict = "beyond" if hi - lo > 2 * noise else "within" if hi - lo < noise * 1.5 else "at the edge of"
    return (f"means span {lo:.2f}–{hi:.2f} ({(hi - lo) / lo:.0%} of the best); seed noise alone would span about "
            f"{noise:.1f} ({len(rows)} settings × {n} seeds, seed std {sigma:.1f}): {verdict} noise")


def hparam_markdown(studies: dict, base: dict, seeds: list[int]) -> str:
    lines = [f"# Hyper-parameter studies (model `{base['model']}`)", "",
             f"D²Prune, calibration `{base['calib']}` {base['nsamples']} × {base['seqlen']} unless N varies; perplexity "
             f"on `{base['eval'][0]}` test ({base['eval_windows']} windows); mean ± std over seeds {seeds}. "
             "Generated by `studies/hparams.py`.", ""]
    rows, cols = sorted({r["r1"] for r in studies["lambda"]}), sorted({r["r2"] for r in studies["lambda"]})
    sp = studies["lambda"][0]["sparsity"] if studies["lambda"] else None
    lines += [f"## λ₁ (rows) × λ₂ (columns) at {sp}", "", "| λ₁ \\ λ₂ | " + " | ".join(f"{g:g}" for g in cols) + " |",
              "|---|" + "---|" * len(cols)]
    for r1 in rows:
        cells = {r["r2"]: _ms(r["ppl"]) for r in studies["lambda"] if r["r1"] == r1}
        lines.append(f"| {r1:g} | " + " | ".join(cells.get(g, "–") for g in cols) + " |")
    lines += ["", f"Effect: {knob_effect(studies['lambda'])}."]
    sps = sorted({r["sparsity"] for r in studies["s"]})
    lines += ["", "## Scale s", "", "| s | " + " | ".join(f"{x:g}" for x in sps) + " |", "|---|" + "---|" * len(sps)]
    for s in dict.fromkeys(r["s"] for r in studies["s"]):
        cells = {r["sparsity"]: _ms(r["ppl"]) for r in studies["s"] if r["s"] == s}
        lines.append(f"| {s if isinstance(s, str) else format(s, 'g')} | " + " | ".join(cells.get(x, "–") for x in sps) + " |")
    lines += [""] + [f"Effect at {x:g}: {knob_effect([r for r in studies['s'] if r['sparsity'] == x])}." for x in sps]
    ns = sorted({r["nsamples"] for r in studies["nsamples"]})
    lines += ["", "## Calibration count N (authors' accumulation vs normalised D² term)", "",
              "| D² statistics | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for norm in ("authors", "mean"):
        cells = {r["nsamples"]: _ms(r["ppl"]) for r in studies["nsamples"] if r["d2_norm"] == norm}
        lines.append(f"| {norm} | " + " | ".join(cells.get(n, "–") for n in ns) + " |")
    lines += [""] + [f"Effect of N, {norm}: {knob_effect([r for r in studies['nsamples'] if r['d2_norm'] == norm])}."
                     for norm in ("authors", "mean")]
    return "\n".join(lines) + "\n"
