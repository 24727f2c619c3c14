"""D²Prune vs SparseGPT prune time, measured in one process, interleaved, same code and conditions.

Writes results/timing.json and results/timing.md: prune seconds, the floor (two forward passes of every
block over the calibration windows) and the ratios the engine issue asks for."""
from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from d2p_helpers.models import load_model  # noqa: E402
from d2p_helpers.prune import prune  # noqa: E402
from d2p_helpers.record import versions, write_json, write_text  # noqa: E402

PROTOCOL = {"model": "smollm2-135m", "calib": "news", "nsamples": 16, "seqlen": 256, "seed": 0, "sparsity": 0.5,
            "repeats": 2, "threads": torch.get_num_threads()}

def interleaved(dense, tok, jobs: dict, repeats: int) -> dict:
    """Each job (key -> prune() keyword arguments, method included) on a fresh copy of `dense`, all jobs once per
    repeat, in this process: ratios between jobs are then measured under the same conditions (the one timing
    loop of the studies; recipes.cost_study uses it too)."""
    out = {key: [] for key in jobs}
    for _ in range(repeats):
        for key, kwargs in jobs.items():
            t0 = time.perf_counter()
            rep = prune(copy.deepcopy(dense), tokenizer=tok, progress=False, **kwargs)
            out[key].append({"wall": time.perf_counter() - t0, "prune_seconds": rep.prune_seconds,
                             "forward_seconds": rep.forward_seconds, "floor_ratio": rep.floor_ratio,
                             "stages": dict(rep.stage_seconds),
                             "self_text": rep.calibration.get("self_generated")})
            print(key, out[key][-1], flush=True)
    return out


def cost_against(spec, settings, baseline: str, candidate: str, repeats: int = 1) -> dict:
    """`candidate`'s prune time ÷ `baseline`'s, both built by a study's `spec(label, setting, seed)` at seed 0
    and timed interleaved in this process: the ratio across separate runs on a shared machine is too noisy to
    hold a 2x target against. Returns per-setting seconds (wall, prune, stages) and the ratio of prune times."""
    first = spec(baseline, settings[0], 0)
    dense, tok = load_model(first.model)
    jobs = {(s, label): {"method": (r := spec(label, s, 0)).method, **r.prune_kwargs()}
            for s in settings for label in (baseline, candidate)}
    timed = interleaved(dense, tok, jobs, repeats)
    seconds = {s: {label: [{"wall": r["wall"], "prune": r["prune_seconds"], "stages": r["stages"],
                            "self_text": r["self_text"]}
                           for r in timed[(s, label)]] for label in (baseline, candidate)} for s in settings}
    ratio = {s: statistics.mean(r["prune"] for r in v[candidate]) / statistics.mean(r["prune"] for r in v[baseline])
             for s, v in seconds.items()}
    return {"seconds": seconds, "ratio": ratio}


def cost_text(seconds: dict, ratio: dict, baseline: str, candidate: str) -> str:
    """One sentence's worth: per setting, the ratio, both prune times and the candidate's stage seconds."""
    mean = statistics.mean

    def per_setting(s, r):
        ours, base = seconds[s][candidate], seconds[s][baseline]
        stages = ", ".join(f"{k} {mean(x['stages'].get(k, 0) for x in ours):.0f} s" for k in ours[0]["stages"])
        return (f"{s}: **{r:.2f}×** ({mean(x['prune'] for x in ours):.0f} s vs "
                f"{mean(x['prune'] for x in base):.0f} s; stages {stages or 'none'}{self_text(ours, base)})")

    def self_text(ours, base):
        """Generated calibration text is made once per model and seed: say whether this run made it."""
        notes = [x["self_text"] for x in ours if x.get("self_text")]     # older records have no such key
        if not notes:
            return ""
        gen = notes[0]["generate_seconds"]
        if all(n["cache"] == "written" for n in notes):
            return f"; generating the self text took {gen:.0f} s of it"
        with_gen = (mean(x["prune"] for x in ours) + gen) / mean(x["prune"] for x in base)
        return (f"; the self text was read from the cache: generating it took {gen:.0f} s once per model and seed, "
                f"{with_gen:.2f}× with it")
    return ", ".join(per_setting(s, r) for s, r in ratio.items())


if __name__ == "__main__":
    p = PROTOCOL
    dense, tok = load_model(p["model"])
    jobs = {m: dict(method=m, sparsity=p["sparsity"], calib=p["calib"], nsamples=p["nsamples"], seqlen=p["seqlen"],
                    seed=p["seed"]) for m in ("sparsegpt", "d2prune", "wanda")}
    runs = {m: [{k: r[k] for k in ("prune_seconds", "forward_seconds", "floor_ratio")} for r in rs]
            for m, rs in interleaved(dense, tok, jobs, p["repeats"]).items()}
    mean = {m: statistics.mean(r["prune_seconds"] for r in rs) for m, rs in runs.items()}
    floor = {m: statistics.mean(r["floor_ratio"] for r in rs) for m, rs in runs.items()}
    out = {"protocol": p, "runs": runs, "mean_prune_seconds": mean, "mean_floor_ratio": floor,
           "d2prune_over_sparsegpt": mean["d2prune"] / mean["sparsegpt"], "versions": versions()}
    write_json(ROOT / "results" / "timing.json", out)
    lines = ["# Prune time: D²Prune vs SparseGPT (one process, interleaved)", "",
             f"Model `{p['model']}`, {p['nsamples']} × {p['seqlen']} calibration, {p['sparsity']:.0%}, CPU, "
             f"{p['threads']} thread(s), {p['repeats']} repeats. Floor = two forward passes of every block over the "
             "calibration windows (the pruned pass is timed; the dense pass costs the same). Generated by `studies/timing.py`.",
             "", "| method | mean prune s | prune ÷ floor |", "|---|---|---|"]
    lines += [f"| {m} | {mean[m]:.1f} | {floor[m]:.2f} |" for m in runs]
    lines += ["", f"D²Prune / SparseGPT: **{out['d2prune_over_sparsegpt']:.2f}×** (paper Table 15: 0.96× on an A40)."]
    write_text(ROOT / "results" / "timing.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
