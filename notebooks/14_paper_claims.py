# %% [markdown]
# # 14 · The paper's claims, one by one
#
# **What you will learn.** How to check a paper claim by claim: for each, the paper's number (from
# `d2p_helpers/paper.py`, which holds its tables), ours with its seed noise (from the result files the studies
# wrote), and a verdict — **reproduced**, **not reproduced**, or **not testable here** — with the reason. Nothing
# is measured in this notebook except, when notebook 02's record is absent, its λ fit at a small size; every
# sentence below is computed from the files. Our model is SmolLM2-135M (Llama family) calibrated on `news` and
# scored on `wiki`; the paper's is OPT-125M on C4 and WikiText-2. Symbols: [notation card](NOTATION.md).

# %% tags=["parameters"]
# results_dir holds bench.json, qkv_selectors.json, hparams.json, zeroshot.json,
# vision.json and timing.json
results_dir: str = "../results"  # the studies' result files (listed above)
eval_data: str = "wiki"         # the text in the WikiText-2 role
# lambda_record: when the file is absent, the λ fit runs here
lambda_record: str = "../runs/notebooks/02_delta_x_lambda_check.json"  # 02's record
attention_record: str = "../runs/notebooks/04_attention_kl.json"  # 04's record (optional)
fit_model: str = "smollm2-135m"  # model for the λ fit when notebook 02's record is absent
fit_nsamples: int = 16          # windows per text for that fit (notebook 02's default)
fit_seqlen: int = 256           # tokens per window for that fit
fit_seed: int = 0               # window seed for that fit
time_tolerance: float = 0.10    # |D²Prune/SparseGPT time − 1| within this: "same cost"
control_tolerance: float = 0.10  # a control λ this close to cross-text λ: no text shift
verdicts_path: str = "VERDICTS.md"  # the verdict sheet it writes (relative to notebooks/)
out_dir: str = "../runs/notebooks"  # JSON record and figures

# %%
from d2p_helpers.notebooks_run import runtime_note

runtime_note("14_paper_claims")

# %%
import json
import math
import statistics
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from d2p_helpers import noise, notebook, plots
from d2p_helpers.paper import (DEIT_ACC, OPT125M_FROZEN, OPT125M_LAMBDA_80, OPT125M_PPL,
                               OPT125M_ZEROSHOT_MEAN)
from d2p_helpers.zeroshot import PAPER_TASKS
from studies.hparams import knob_effect

out, fig_dir, res = Path(out_dir), Path(out_dir) / "figures", Path(results_dir)

# %%
# the paper's Figure 3, Appendix C and Table 15, in this order
from d2p_helpers.paper import FIG3_PEAK_ATTENTION as PAPER_FIG3_PEAK  # noqa: E402
from d2p_helpers.paper import LAMBDA_FIT as PAPER_LAMBDA_FIT  # noqa: E402
from d2p_helpers.paper import PRUNE_SECONDS_OPT125M as PAPER_PRUNE_SECONDS  # noqa: E402

# %% [markdown]
# ## The result files, and one way to record a claim

# %%
def load(name: str):
    p = res / name
    return json.loads(p.read_text()) if p.exists() else None


bench, qkv, hp, zs, vis, timing = (load(f) for f in ("bench.json", "qkv_selectors.json",
                                                     "hparams.json", "zeroshot.json",
                                                     "vision.json", "timing.json"))
claims = []


def claim(what: str, source: str, paper: str, ours: str, verdict: str) -> None:
    claims.append({"claim": what, "paper's table": source, "paper": paper,
                   "ours (± seed noise)": ours, "verdict": verdict})
    display(Markdown(f"**{what}** ({source}) — {verdict}\n\n*paper:* "
                     f"{paper}\n\n*ours:* {ours}"))

# %% [markdown]
# Perplexities of the benchmark per method, setting and calibration seed; a ratio of two methods is taken per seed
# (same calibration windows) and called "beyond seed noise" when it differs from 1 by more than the 95 % Student-t
# multiple of its standard error (`noise.paired_ratio`). Settings with one seed give no noise estimate.

# %%
runs = {}
for r in (bench or {}).get("records", []):
    b = r["bench"]
    runs.setdefault(b["method"], {}).setdefault(
        b["setting"], {})[b["seed"]] = r["ppl"][eval_data]


def vs(a: str, b: str, s: str):
    return noise.paired_ratio(runs.get(a, {}).get(s, {}), runs.get(b, {}).get(s, {}))


seeded = sorted(s for s in runs.get("d2prune", {}) if len(runs["d2prune"][s]) > 1)
paper_key = {s: str(round(float(s) * 100)) if ":" not in s else s
             for s in runs.get("d2prune", {})}
print(f"benchmark: {len(bench['records']) if bench else 0} runs; "
      f"settings with several seeds: {seeded}")

# %% [markdown]
# ## Table 1 — the method ordering

# %%
paper_best = [s for s, row in OPT125M_PPL.items()
              if min(("SparseGPT", "Wanda", "D2Prune"), key=row.get) == "D2Prune"]
per = {s: (vs("d2prune", "sparsegpt", s), vs("d2prune", "wanda", s)) for s in seeded}
wins = [s for s, (a, b) in per.items()
        if a["verdict"] == b["verdict"] == "lower beyond seed noise"]
claim("D²Prune has lower perplexity than SparseGPT and Wanda at every sparsity",
      "Table 1",
      f"D²Prune lowest of the three at {len(paper_best)} of "
      f"{len(OPT125M_PPL)} settings (OPT-125M)",
      "; ".join(f"{s}: ÷ SparseGPT {plots.ratio_text(a)}, ÷ Wanda {plots.ratio_text(b)}"
                for s, (a, b) in per.items()),
      ("not testable here: no setting with several seeds" if not per else
       ("reproduced" if len(wins) == len(per) else "not reproduced")
       + f": lowest beyond seed noise at {len(wins)} of {len(per)} seeded "
         f"settings ({', '.join(wins) or 'none'})"))

# %% [markdown]
# The same claim at the paper's calibration count (`results/bench_paper_n.json`: 128 × 512 windows of `news`),
# with the same per-seed rule; a setting counts once it has several seeds.

# %%
pn = load("bench_paper_n.json")
pn_runs = {}
for r in (pn or {}).get("records", []):
    b = r["bench"]
    pn_runs.setdefault(b["method"], {}).setdefault(
        b["setting"], {})[b["seed"]] = r["ppl"][eval_data]
pn_seeded = sorted(s for s in pn_runs.get("d2prune", {})
                   if len(pn_runs["d2prune"][s]) > 1)
pn_per = {s: tuple(noise.paired_ratio(pn_runs.get("d2prune", {}).get(s, {}),
                                      pn_runs.get(b, {}).get(s, {}))
                   for b in ("sparsegpt", "wanda"))
          for s in sorted(pn_runs.get("d2prune", {}))}
pn_wins = [s for s in pn_seeded
           if all(x["verdict"] == "lower beyond seed noise" for x in pn_per[s])]
claim("D²Prune has lower perplexity than SparseGPT and Wanda, at the paper's N",
      "Table 1 (paper-N)",
      f"D²Prune lowest of the three at {len(paper_best)} of {len(OPT125M_PPL)} "
      "settings (OPT-125M, N = 128)",
      "; ".join(f"{s}: ÷ SparseGPT {plots.ratio_text(a)}, ÷ Wanda {plots.ratio_text(b)}"
                for s, (a, b) in pn_per.items()),
      ("not testable here: every paper-N setting has one seed so far" if not pn_seeded
       else ("reproduced" if len(pn_wins) == len(pn_seeded) else "not reproduced")
       + f": lowest beyond seed noise at {len(pn_wins)} of {len(pn_seeded)} seeded "
         f"settings ({', '.join(pn_wins) or 'none'})"))

# %% [markdown]
# ## Table 2 — the D² score alone (no frozen projection)

# %%
for ours_m, base_m, pk, pb in (("d2-sparsegpt", "sparsegpt", "D2-SparseGPT", "SparseGPT"),
                               ("d2-wanda", "wanda", "D2-Wanda", "Wanda")):
    paper_rel = {s: row[pk] / row[pb] - 1 for s, row in OPT125M_PPL.items() if pk in row}
    r = {s: vs(ours_m, base_m, s) for s in seeded}
    lower = [s for s, x in r.items() if x["verdict"] == "lower beyond seed noise"]
    claim(f"{pk.replace('2', '²')} beats {pb}", "Table 2",
          ", ".join(f"{100 * v:+.1f}% at {k}" for k, v in paper_rel.items()),
          "; ".join(f"{s}: {plots.ratio_text(x)}, {x['verdict']}" for s, x in r.items()),
          ("not testable here: no setting with several seeds" if not r else
           ("reproduced" if len(lower) == len(r) else "not reproduced")
           + f": lower beyond seed noise at {len(lower)} of {len(r)} seeded settings"))

# %% [markdown]
# ## Table 3 — which projection to freeze
#
# The q/k/v study has one calibration seed; the noise of a difference between two of its runs is taken from the
# benchmark's seed spread of D²Prune at the same sparsity ($\sqrt2$ times the relative seed std, two of those to count).

# %%
rows = (qkv or {}).get("rows", [])
sps = sorted({r["sparsity"] for r in rows})
ppl = {(r["sparsity"], r["config"]): r["ppl"] for r in rows}
best = {sp: min(("freeze q", "freeze k", "freeze v"), key=lambda c: ppl[(sp, c)])
        for sp in sps}
rel_std = {sp: statistics.stdev(v.values()) / statistics.mean(v.values()) for sp in sps
           if len(v := runs.get("d2prune", {}).get(str(sp), {})) > 1}
thr = {sp: 2 * math.sqrt(2) * s for sp, s in rel_std.items()}
all_frozen = {sp: ppl[(sp, "no q/k/v updated (all frozen)")] / ppl[(sp, best[sp])] - 1
              for sp in sps}
spread = {sp: max(ppl[(sp, c)] for c in ("freeze q", "freeze k", "freeze v"))
              / ppl[(sp, best[sp])] - 1 for sp in sps}
paper_frozen = {k: min(("q", "k", "v"), key=row.get) for k, row in OPT125M_FROZEN.items()}

# %%
beats_all = [sp for sp in thr if all_frozen[sp] < -thr[sp]]
beats_updated = all(ppl[(sp, best[sp])] < ppl[(sp, "all updated (none frozen)")]
                    for sp in sps)
choice_noise = [sp for sp in thr if spread[sp] < thr[sp]]
claim("One frozen projection, the same at every sparsity, beats updating "
      "all three and updating none",
      "Table 3",
      "best frozen: " + ", ".join(f"{k}% {v}" for k, v in paper_frozen.items())
      + " (OPT-125M; v for LLaMA-2-7B)",
      "; ".join(f"{sp:.0%}: best {best[sp]}, the three within "
                f"{100 * spread[sp]:.1f}%, all frozen {100 * all_frozen[sp]:+.1f}% vs it"
                + (f" (noise ±{100 * thr[sp]:.1f}%)" if sp in thr
                   else " (no noise estimate)")
                for sp in sps) + "; one seed",
      "not testable here: no q/k/v study" if not rows else
      ("not reproduced" if beats_all or len(set(best.values())) > 1 or not beats_updated
       else "reproduced")
      + ": best single choice "
      + ("varies (" + ", ".join(best.values()) + ")" if len(set(best.values())) > 1
         else "is " + best[sps[0]])
      + (f"; freezing all three is better beyond noise at "
         f"{', '.join(f'{sp:.0%}' for sp in beats_all)}" if beats_all else "")
      + ("; the single choices differ by less than the noise at "
         f"{', '.join(f'{sp:.0%}' for sp in choice_noise)}" if choice_noise else "")
      + ("" if beats_updated else "; the best single choice does not beat updating all "
                                  "three everywhere"))

# %% [markdown]
# ## Table 5 — zero-shot accuracy
#
# The paper's mean is over seven tasks (PIQA excluded), acc_norm where a task has it. Its standard error with $n$
# examples per task is $\frac17\sqrt{\sum_k p_k(1-p_k)/n}$; the difference of two models has at most
# $\sqrt{\mathrm{SE}_a^2 + \mathrm{SE}_b^2}$.

# %%
def mean7(model_rec):
    vals = [(v["acc_norm"] if v["acc_norm"] is not None else v["acc"], v["n"])
            for t, v in model_rec["zeroshot"].items() if t in PAPER_TASKS]
    return (sum(p for p, _ in vals) / len(vals),
            math.sqrt(sum(p * (1 - p) / n for p, n in vals)) / len(vals))


paper_gap = (OPT125M_ZEROSHOT_MEAN["50"]["D2Prune"]
             - OPT125M_ZEROSHOT_MEAN["50"]["SparseGPT"])
if zs:
    (m_d2, se_d2), (m_sg, se_sg) = (mean7(zs["models"]["d2prune"]),
                                    mean7(zs["models"]["sparsegpt"]))
    gap, resolution = 100 * (m_d2 - m_sg), 200 * math.hypot(se_d2, se_sg)
    claim("D²Prune keeps more zero-shot accuracy than SparseGPT", "Table 5",
          f"{paper_gap:+.2f} points at 50% (OPT-125M, mean of 7 tasks)",
          f"{gap:+.1f} ± {resolution:.1f} points at {zs['protocol']['sparsity']:.0%} "
          f"({zs['protocol']['limit']} examples per task)",
          ("not testable here"
           if abs(paper_gap) < resolution and abs(gap) < resolution else
           "reproduced" if gap > resolution else "not reproduced")
          + f": our resolution is ±{resolution:.1f} points, the claimed "
            f"gap {abs(paper_gap):.2f}")

# %% [markdown]
# ## Table 7 — vision
#
# The paper prunes DeiT and scores ImageNet-1K. Neither exists here; `results/vision.json` is a proxy (a DINOv2 ViT-S
# with a k-NN probe on Fashion-MNIST). A k-NN accuracy $p$ on $n$ test images has standard error $\sqrt{p(1-p)/n}$
# from the choice of test images alone.

# %%
n_test = (vis or {}).get("protocol", {}).get("knn_test")
acc = {k: (v["knn_top1_pruned"], v.get("test_images") or n_test)
       for k, v in (vis or {}).get("rows", {}).items() if "@" in k}
vsps = sorted({k.split("@")[1] for k in acc}, key=float)


def acc_text(k):
    p, n = acc[k]
    return f"{100 * p:.0f} ± {100 * math.sqrt(p * (1 - p) / n):.0f}"

# %%
if acc:
    ours_v = "; ".join(f"{s}: " + ", ".join(f"{m} {acc_text(f'{m}@{s}')}"
                                            for m in ("d2prune", "sparsegpt", "wanda")
                                            if f"{m}@{s}" in acc) for s in vsps)
    n_img = min(n for _, n in acc.values())
    pdiff = abs(DEIT_ACC["60"]["D2Prune"] - DEIT_ACC["60"]["SparseGPT"])
    claim("D²Prune keeps ViT accuracy better than SparseGPT and Wanda", "Table 7",
          "; ".join(f"{k}%: D²Prune {v['D2Prune']}, SparseGPT {v['SparseGPT']}, "
                    f"Wanda {v['Wanda']}" for k, v in DEIT_ACC.items() if k != "Dense")
          + f" (DeiT, ImageNet-1K; dense {DEIT_ACC['Dense']})",
          ours_v + f" (k-NN top-1 %, ± one standard error, {n_img} test images)",
          "not testable here: no DeiT or ImageNet; the proxy's standard error, "
          f"up to ±{100 * 0.5 / math.sqrt(n_img):.0f} points per accuracy, is "
          f"{'larger' if 50 / math.sqrt(n_img) > pdiff else 'smaller'} than the paper's "
          f"D²Prune − SparseGPT difference at 60% ({pdiff:.2f} points)")

# %% [markdown]
# ## Table 15 — prune time
#
# `results/timing.json` times D²Prune and SparseGPT interleaved in one process; the ratio is taken per repeat.

# %%
if timing:
    t_runs = timing["runs"]
    tr = noise.paired_ratio(
        {i: r["prune_seconds"] for i, r in enumerate(t_runs["d2prune"])},
        {i: r["prune_seconds"] for i, r in enumerate(t_runs["sparsegpt"])})
    paper_ratio = PAPER_PRUNE_SECONDS["D2Prune"] / PAPER_PRUNE_SECONDS["SparseGPT"]
    same = abs(tr["mean"] - 1) <= time_tolerance
    claim("D²Prune costs the same time as SparseGPT", "Table 15",
          f"{PAPER_PRUNE_SECONDS['D2Prune']} s vs {PAPER_PRUNE_SECONDS['SparseGPT']} "
          f"s: {paper_ratio:.2f}× (A40)",
          f"D²Prune ÷ SparseGPT {tr['mean']:.2f}×"
          + (f" ± {tr['se']:.2f}" if tr["se"] else "")
          + f" over {tr['n']} repeats ({timing['protocol']['threads']} CPU threads)",
          (f"reproduced: within ±{time_tolerance:.0%} of the same cost" if same else
           f"not reproduced: {abs(tr['mean'] - 1):.0%} away from the same cost "
           f"(tolerance ±{time_tolerance:.0%})"))

# %% [markdown]
# ## Appendix C — the activation shift δx = λx
#
# Notebook 02 fits λ per text pair, with a same-text control. Its record is read when present; otherwise the same
# fit (the package functions notebook 02 uses) runs here on `fit_nsamples` windows per text.

# %%
rec = Path(lambda_record)
if rec.exists():
    fits, lam_source = json.loads(rec.read_text())["metrics"]["fits"], str(rec)
else:
    from d2p_helpers.activations import block_inputs, fit_lambda, shift_points
    from d2p_helpers.data import calibration_windows
    from d2p_helpers.notebook import dense_model
    lm, tok = dense_model(fit_model)
    act = {k: block_inputs(lm, calibration_windows(tok, t, fit_nsamples, fit_seqlen,
                                                   fit_seed + off).ids, progress=False)
           for k, t, off in (("news", "news", 0), ("wiki", "wiki", 0),
                             ("news 2", "news", 1000))}
    fits = {"news-wiki": fit_lambda(*shift_points(act["news"], act["wiki"])),
            "news-news (control)": fit_lambda(*shift_points(act["news"], act["news 2"]))}
    lam_source = f"fitted here ({fit_model}, {fit_nsamples} x {fit_seqlen})"

# %%
lam, r2, control = (fits["news-wiki"]["lambda"], fits["news-wiki"]["r2"],
                    fits["news-news (control)"]["lambda"])
eq9 = {"lambda1": lam, "lambda2": 0.5 * lam ** 2 - lam, "r1": lam,
       "r2": lam - 0.5 * lam ** 2}
ctrl_gap = abs(lam / control - 1)
claim("Calibration and test activations differ by δx = λx, λ near 1 (R² ≈ 1)",
      "Appendix C, Figure 8",
      f"λ = {PAPER_LAMBDA_FIT['lambda']} with R² = {PAPER_LAMBDA_FIT['r2']:.2f} "
      "(OPT-125M, C4 → WikiText-2)",
      f"λ = {lam:.2f}, R² = {r2:.3f} (news → wiki); same-text control λ "
      f"= {control:.2f}; source: {lam_source}",
      # decided against the control, not by a fixed R² cutoff: the claim is about a
      # shift *between texts*
      (f"not reproduced: the same-text control gives λ within {ctrl_gap:.0%} of "
       f"the cross-text λ (tolerance {control_tolerance:.0%}), so the straight-line "
       f"fit (R² {r2:.3f}) measures token mismatch, not a shift between "
       "texts" if ctrl_gap < control_tolerance else
       f"reproduced: the same-text control differs by {ctrl_gap:.0%} (more "
       f"than {control_tolerance:.0%}), so part of λ is a shift between texts; "
       f"the straight-line fit has R² {r2:.3f}"))

# %% [markdown]
# Eq. 9 turns this λ into $(\lambda_1, \lambda_2) = (\lambda, \tfrac12\lambda^2 - \lambda)$, i.e. the code's
# $(r_1, r_2) = (\lambda, \lambda - \tfrac12\lambda^2)$ — the star on notebook 11's grid, hatched where cells are within
# seed noise of the best:

# %%
if hp:
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    lam_cells = {(r["r1"], r["r2"]): noise.by_seed(r["ppl"], r["seeds"])
                 for r in hp["studies"]["lambda"]}
    plots.grid_image(ax, fig, lam_cells,
                     "notebook 11's (r1, r2) grid at "
                     f"{hp['studies']['lambda'][0]['sparsity']:.0%}",
                     (eq9["r1"], eq9["r2"],
                      f"Eq. 9 at λ = {lam:.2f}: ({eq9['r1']:.2f}, {eq9['r2']:.2f})"))
    fig_grid = plots.save(fig, fig_dir / "14_lambda_on_grid.png")
    grid_r = sorted({r["r1"] for r in hp["studies"]["lambda"]})
    inside = grid_r[0] <= eq9["r1"] <= grid_r[-1] and grid_r[0] <= eq9["r2"] <= grid_r[-1]
    print(f"(r1, r2) = ({eq9['r1']:.2f}, {eq9['r2']:.2f}) lies "
          f"{'inside' if inside else 'outside'} the measured grid")

# %% [markdown]
# ## Table 8 — does tuning (λ₁, λ₂) pay?

# %%
if hp:
    lam_rows = hp["studies"]["lambda"]
    lam_cells = {(r["r1"], r["r2"]): noise.by_seed(r["ppl"], r["seeds"])
                 for r in lam_rows}
    close = noise.within_noise_of_best(lam_cells)
    pv = OPT125M_LAMBDA_80.values()
    effect = knob_effect(lam_rows)
    claim("The choice of (λ₁, λ₂) moves perplexity", "Table 8",
          f"ppl spans {min(pv):.0f}–{max(pv):.0f} ({max(pv) / min(pv) - 1:.0%}) "
          "over the grid at 80% (OPT-125M)",
          f"{effect}; {len(close)} of {len(lam_rows)} cells not "
          "behind the best beyond seed noise",
          ("reproduced" if "beyond" in effect else "not reproduced") + ": "
          + ("the spread exceeds seed noise" if "beyond" in effect
             else "the spread is what seed noise alone gives"))

# %% [markdown]
# ## Attention flattening (Figure 3, the attention-aware update)

# %%
if qkv:
    kl = {(r["sparsity"], r["config"]): r["mean_kl"]
          for r in rows if r["mean_kl"] is not None}
    change = {sp: kl[(sp, "freeze v")] / kl[(sp, "all updated (none frozen)")] - 1
              for sp in sps}
    lower = [sp for sp, c in change.items() if c < 0]
    att = (json.loads(Path(attention_record).read_text())["metrics"]
           if Path(attention_record).exists() else None)
    peak = (("; notebook 04: peak attention ÷ dense, mean over layers, "
             f"SparseGPT {att['mean_peak_ratio']['SparseGPT']:.3f}, freeze v "
             f"{att['mean_peak_ratio']['freeze v']:.3f}")
            if att and "mean_peak_ratio" in att else "")
    claim("Updating q, k and v flattens attention; freezing one keeps it", "Figure 3",
          f"peak attention {PAPER_FIG3_PEAK['dense']} dense vs "
          f"{PAPER_FIG3_PEAK['SparseGPT']} after SparseGPT (LLaMA-2-7B, last layer)",
          "freeze v ÷ all updated, mean attention KL: "
          + ", ".join(f"{sp:.0%} {100 * c:+.1f}%" for sp, c in change.items())
          + f" (one seed){peak}",
          ("reproduced" if len(lower) == len(change) else "not reproduced")
          + f": freezing v lowers the attention KL at {len(lower)} "
            f"of {len(change)} sparsities")

# %% [markdown]
# ## The claims table

# %%
table = pd.DataFrame(claims)[["claim", "paper's table", "paper", "ours (± seed noise)",
                              "verdict"]]
display(Markdown(table.to_markdown(index=False)))

# %% [markdown]
# ## What we learned

# %%
kinds = ("reproduced", "not reproduced", "not testable here")
count = {k: sum(c["verdict"].split(":")[0] == k for c in claims) for k in kinds}
display(Markdown(
    f"* Of {len(claims)} claims: "
    + ", ".join(f"{v} {k}" for k, v in count.items()) + ".\n"
    + "* Reproduced: "
    + ("; ".join(c["claim"] for c in claims if c["verdict"].startswith("reproduced"))
       or "none") + ".\n"
    + "* Not reproduced: "
    + ("; ".join(c["claim"] for c in claims if c["verdict"].startswith("not reproduced"))
       or "none")
    + ".\n* Every verdict is about SmolLM2-135M on the embedded texts at the studies' "
      "calibration sizes, not OPT-125M on C4."))

# %% [markdown]
# ## The verdict sheet
#
# One page for a reading group (`notebooks/VERDICTS.md`, written here from the result files): every claim with
# the paper's number, ours, the verdict and its reason, then what the collection found that the paper does not
# say, each line computed from a result file.

# %%
def findings() -> list[str]:
    out = []
    rec = load("recipes.json")
    if rec and rec.get("preset"):
        from studies.readme import recipe_headline
        out.append("The recipe preset (`d2p prune " + " ".join(rec["preset"]["flags"])
                   + "`) against the best peer, quick protocol, paired per "
                   "seed:\n\n" + "\n".join(recipe_headline().splitlines()[4:]))
    if pn:
        nq = {s: noise.paired_ratio(pn_runs.get("d2prune-noqkv", {}).get(s, {}),
                                    pn_runs.get("d2prune", {}).get(s, {}))
              for s in sorted(pn_runs.get("d2prune-noqkv", {}))}
        out.append("Freezing all three of q/k/v (none updated) ÷ "
                   "the paper's freeze-one D²Prune at the paper's N, "
                   f"`{eval_data}`: " + "; ".join(f"{s} {plots.ratio_text(r)}"
                                                  for s, r in nq.items() if r) + ".")
    ec = load("error_correction.json")
    vs = [f"{r['setting']} `{r['text']}` vs {r['peer']} {plots.ratio_text(r['paired'])}"
          for r in (ec or {}).get("verdicts", []) if r["paired"]]
    done = (f"{ec['runs_present']} of {ec['runs_planned']} planned runs so far"
            if ec else "not run yet")
    if vs:
        choice = ec["preset"]["label"]
        done += f"; validation's choice `{choice}` ÷ the best peer: " + "; ".join(vs)
    out.append("Error correction toward the dense model "
               f"(results/error_correction.md): {done}.")
    return out


sheet = ["# Verdicts: the paper's claims on the embedded model", "",
         "Generated by `notebooks/14_paper_claims` from `results/` (do not edit). "
         "Model SmolLM2-135M on the embedded texts; the ratio rule: a per-seed "
         "ratio differs from 1 by more than the 95% t multiple of its standard error "
         "(`d2p_helpers.noise.paired_ratio`); one seed gives no verdict.", "",
         "| claim | paper's table | paper | ours | verdict |", "|---|---|---|---|---|"]
cols = ("claim", "paper's table", "paper", "ours (± seed noise)", "verdict")
sheet += ["| " + " | ".join(str(c[k]).replace("\n", " ") for k in cols) + " |"
          for c in claims]
sheet += (["", "## What the collection found that the paper does not say", ""]
          + [f"- {f}\n" for f in findings()])   # a blank line ends a table inside an item
Path(verdicts_path).write_text("\n".join(sheet) + "\n")
print(f"wrote {verdicts_path}: {len(claims)} claims")

# %% [markdown]
# **Discussion.**
# 1. A claim "not reproduced" on another model may still hold on the paper's. Which of the verdicts above would you
#    expect to change on OPT-125M with 128 calibration windows, and which not?
# 2. Several comparisons rest on one calibration seed. Which claim would a second seed most likely overturn?
#
# **What to try next.** Rerun after `make bench-paper-n` (the paper's N) and compare the Table 1 and Table 2 rows;
# run notebook 02 at its defaults first so the δx row reads its record; on a GPU with OPT-125M,
# `studies/paper_protocol.py` produces the paper's own table.


# %%
one_seed = [c["claim"] for c in claims
            if "(n = 1)" in c["ours (± seed noise)"] or "one seed" in c["verdict"]]
notebook.answers([
    "Those about N-dependent effects: the D² term grows with N (authors' sums), so the "
    "Table 2 rows and the paper-N Table 1 row could move at N = 128 on OPT-125M; the δx "
    "verdict should not, since its control shows the fit does not see texts at all.",
    f"The claims that still rest on one seed somewhere: {'; '.join(one_seed) or 'none'}; "
    "the paper-N rows first, where every setting had one seed when this "
    "ran (see `results/bench_paper_n.md`)."])

# %%
notebook.finish(out, "14_paper_claims",
                {"results_dir": results_dir, "eval_data": eval_data,
                 "lambda_record": lambda_record, "attention_record": attention_record,
                 "fit_model": fit_model, "fit_nsamples": fit_nsamples,
                 "fit_seqlen": fit_seqlen, "fit_seed": fit_seed,
                 "time_tolerance": time_tolerance, "control_tolerance": control_tolerance,
                 "verdicts_path": verdicts_path},
                {"claims": claims, "counts": count, "lambda_source": lam_source,
                 "eq9": eq9},
                [fig_grid] if hp else [])
