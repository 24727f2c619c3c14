"""Beyond the paper: which ingredient buys what — OWL, mask refinement, exact reconstruction — composed with
Wanda, SparseGPT and D²Prune, beside the peers (magnitude, Wanda, SparseGPT, RIA, D²Prune).

Protocol: calibration `news`, N = 64 windows of L = 128 tokens. N = 64 because the authors' D² term grows
with N (N ≥ 64 is where the project's N study stopped improving); L = 128 so that one run, stages included,
fits in a few minutes on one CPU thread here (N × L = 8192 tokens, twice the quick benchmark's). Every run
is evaluated on four texts: `wiki:val` and `news:val` (validation: the only texts any choice looks at) and
`wiki` test and `news:test` (reported; no choice ever looks at them). Stage hyper-parameters are the papers'
defaults (OWL M = 5, λ = 0.08; 50 refinement cycles); which stages make the preset is chosen on validation.

    python -m studies.recipes [--limit-minutes 60] [--report]

Runs go in the studies' run cache (resumable; planned in priority order: the headline configs at 70%, 2:4 and 50% with
three seeds, then the single stages, then the other settings). Writes results/recipes.{json,md} and figures/recipes.png."""
from __future__ import annotations

import argparse
import math
import statistics

from d2p_helpers.noise import VERDICT_WORD, paired_ratio
from d2p_helpers.prune.cli_args import option_flags
from d2p_helpers.record import read_json, versions, write_json, write_text
from studies.runs import ROOT, RunSpec, cached, refuse_a_shrinking_report, run_plan, saved_results

PROTOCOL = {"model": "smollm2-135m", "calib": "news", "nsamples": 64, "seqlen": 128,
            "eval": ["wiki", "news:test", "wiki:val", "news:val"], "eval_windows": 16}
VALIDATION, REPORTED = ("wiki:val", "news:val"), ("wiki", "news:test")
SETTINGS = ["0.5", "0.6", "0.7", "0.8", "2:4", "4:8"]
PRIORITY = ["0.7", "2:4", "0.5", "0.6", "0.8", "4:8"]
SEEDED = {"0.7": [0, 1, 2], "2:4": [0, 1, 2], "0.5": [0, 1, 2]}
PEERS = {"magnitude": ("magnitude", {}), "wanda": ("wanda", {}), "sparsegpt": ("sparsegpt", {}),
         "ria": ("ria", {}), "d2prune": ("d2prune", {})}
BASES = {"wanda": ("wanda", {}), "sparsegpt": ("sparsegpt", {}), "d2prune": ("d2prune", {}),
         "d2prune-noqkv": ("d2prune", {"frozen": "all"})}
STAGES = {"owl": {"layer_sparsity": "owl"}, "dsnot": {"refine": "dsnot"}, "exact": {"reconstruct": "exact"},
          "all": {"layer_sparsity": "owl", "refine": "dsnot", "reconstruct": "exact"}}
# The composition validation chose (`choose_preset`, over 50%, 70% and 2:4, seed 0). The preset is that
# composition with its least-squares step solved by 20 conjugate-gradient steps instead of exactly: the same
# problem, within 6e-5 of the exact solution on every linear of a real block (results/reconstruct.md) and
# 2-7x cheaper, which is what brings the preset toward SparseGPT's time. `report` checks both choices.
PRESET_BASIS = "d2prune-noqkv+all"
PRESET = "preset"


def configs(setting: str) -> dict:
    """label -> (method, options) for one setting; OWL is unstructured only, so at N:M 'all' drops it."""
    out = dict(PEERS)
    for base, (method, opts) in BASES.items():
        if base == "d2prune-noqkv":
            out[base] = (method, opts)
        for stage, extra in STAGES.items():
            extra = dict(extra)
            if ":" in setting and "layer_sparsity" in extra:
                if stage == "owl":
                    continue
                extra.pop("layer_sparsity")
            out[f"{base}+{stage}"] = (method, {**opts, **extra})
    method, opts = out[PRESET_BASIS]
    out[PRESET] = (method, {**opts, "reconstruct": "cg"})
    return out


def spec(label: str, setting: str, seed: int) -> RunSpec:
    method, options = configs(setting)[label]
    return RunSpec.make(method, setting, options, seed=seed, **PROTOCOL)


def tier(label: str) -> int:
    """Run order within the plan: the peers and each base with every stage first, single stages after."""
    if "+" not in label or label.endswith("+all") or label in ("d2prune-noqkv", PRESET):
        return 0
    return 1 if label.startswith(("d2prune-noqkv+", "sparsegpt+")) else 2


def plan() -> list[tuple[str, str, int]]:
    """The headline configs (peers, no-q/k/v, each base with every stage, the preset) at 70%, 2:4 and 50%:
    seed 0; then the peers and the preset at seeds 1 and 2 (the verdict needs seeds); then the other headline
    configs' seeds; then the single stages there; then the remaining settings."""
    lead, rest = PRIORITY[:3], PRIORITY[3:]
    runs = [(label, s, 0) for s in lead for label in configs(s) if tier(label) == 0]
    runs += [(label, s, seed) for seed in (1, 2) for s in lead if seed in SEEDED.get(s, [0])
             for label in (*PEERS, PRESET)]
    runs += [(label, s, seed) for seed in (1, 2) for s in lead if seed in SEEDED.get(s, [0])
             for label in configs(s) if tier(label) == 0 and label not in (*PEERS, PRESET)]
    runs += [(label, s, 0) for t in (1, 2) for s in lead for label in configs(s) if tier(label) == t]
    runs += [(label, s, 0) for s in rest for label in configs(s)]
    return runs + [(label, s, seed) for s in rest for seed in SEEDED.get(s, [0])[1:] for label in configs(s)]


def run_all(limit_minutes: float | None) -> None:
    run_plan(plan(), spec, limit_minutes, "recipes")


def cell_table(settings, configs_of, spec_of, seeded: dict, texts) -> dict:
    """{setting: {label: {text: [ppl per seed], "prune_seconds": [...], "stage_seconds": [...], "seeds": [...]}}}
    from the run cache: the table of any study built from configs and specs (this one, error_correction)."""
    out = {}
    for setting in settings:
        for label in configs_of(setting):
            recs = [(seed, cached(spec_of(label, setting, seed))) for seed in seeded.get(setting, [0])]
            recs = [(seed, r) for seed, r in recs if r is not None]
            if not recs:
                continue
            out.setdefault(setting, {})[label] = {
                **{t: [r["ppl"][t] for _, r in recs] for t in texts},
                "seeds": [seed for seed, _ in recs], "prune_seconds": [r["prune_seconds"] for _, r in recs],
                "stage_seconds": [r.get("stage_seconds", {}) for _, r in recs]}
    return out


def table() -> dict:
    return cell_table(SETTINGS, configs, spec, SEEDED, PROTOCOL["eval"])


def val_score(cell: dict) -> float:
    """Geometric mean of the two validation perplexities (seed 0 only, so every label is compared alike)."""
    return math.sqrt(cell["wiki:val"][0] * cell["news:val"][0])


def choose_preset(tab: dict) -> dict | None:
    """The composition with the best mean log validation score relative to the best peer, over the settings
    where every candidate ran (seed 0). Looks at wiki:val and news:val only."""
    settings = [s for s in tab if any(p in tab[s] for p in PEERS)]
    candidates = sorted(label for label in configs("0.5") if label not in (*PEERS, PRESET)
                        and all(label in tab[s] or label not in configs(s) for s in settings))
    if not candidates or not settings:
        return None

    def rel(label):
        vals = [math.log(val_score(tab[s][label]) / min(val_score(tab[s][p]) for p in PEERS if p in tab[s]))
                for s in settings if label in tab[s]]
        return statistics.mean(vals) if vals else math.inf
    scores = {c: rel(c) for c in candidates}
    best = min(scores, key=scores.get)
    method, options = configs(settings[0])[PRESET]
    cg_vs_exact = {s: val_score(tab[s][PRESET]) / val_score(tab[s][PRESET_BASIS]) for s in settings
                   if PRESET in tab[s] and PRESET_BASIS in tab[s]}
    return {"label": PRESET, "composition": PRESET_BASIS, "chosen_on_validation": best,
            "validation_log_ratio_to_best_peer": scores, "settings_compared": settings,
            "cg_over_exact_validation": cg_vs_exact, "flags": ["--method", method, *option_flags(options)]}


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})" if len(values) > 1 \
        else f"{values[0]:.2f} (n=1)"


def markdown(tab: dict, preset: dict | None, n_runs: int) -> str:
    p = PROTOCOL
    lines = ["# Beyond the paper: OWL, refinement and exact reconstruction on the embedded model", "",
             f"Model `{p['model']}`, calibration `{p['calib']}` {p['nsamples']} × {p['seqlen']}; perplexity on "
             f"`wiki` test and `news:test` (reported; never used for a choice) and `wiki:val`, `news:val` "
             f"(validation: the preset is chosen on these), {p['eval_windows']} windows × {p['seqlen']} tokens each. "
             "Stages at the papers' defaults (OWL M = 5, λ = 0.08; DSnoT 50 cycles); `+all` = OWL + DSnoT + exact "
             "(at N:M: DSnoT + exact). d2prune-noqkv: D²Prune with none of q/k/v updated; `preset`: see below. "
             f"{n_runs} of {len(plan())} planned runs present. Generated by `studies/recipes.py`.", ""]
    if preset:
        lines += [f"**Preset:** `d2p prune {' '.join(preset['flags'])}` — the composition `{preset['composition']}`, "
                  f"chosen on validation over settings {', '.join(preset['settings_compared'])} (seed 0), with its "
                  "least-squares step solved by 20 conjugate-gradient steps instead of exactly (`--reconstruct cg`: "
                  "the same problem, 2–7× cheaper; results/reconstruct.md). Its validation score (geometric mean of "
                  "`wiki:val` and `news:val`, seed 0) ÷ the exact form's: " + (", ".join(
                      f"{s} {r:.3f}" for s, r in preset["cg_over_exact_validation"].items()) or "not run yet") + ".", ""]
        if preset["chosen_on_validation"] != preset["composition"]:
            lines += [f"**Note:** validation now prefers `{preset['chosen_on_validation']}`; the preset still "
                      f"follows `PRESET_BASIS` in studies/recipes.py and should be updated.", ""]
    for text in REPORTED:
        lines += [f"## Perplexity, `{text}`", "", "| config | " + " | ".join(SETTINGS) + " |",
                  "|---|" + "---|" * len(SETTINGS)]
        labels = list(dict.fromkeys(label for s in SETTINGS for label in configs(s)))
        for label in labels:
            cells = [_ms(tab[s][label][text]) if label in tab.get(s, {}) else "–" for s in SETTINGS]
            if any(c != "–" for c in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if preset:
        lines += ["## The preset against the best peer", "",
                  "Best peer: the peer with the lowest mean on that text. Preset ÷ peer: the per-seed ratio on "
                  "the same calibration draw, mean ± std over the shared seeds; the verdict is the paired noise "
                  "rule of `d2p_helpers.noise` (ahead or behind when the ratio differs from 1 by more than the 95% "
                  "t critical value times its standard error).", "",
                  "| setting | text | best peer | peer ppl | preset ppl | preset ÷ peer (paired) | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for s in SETTINGS:
            cells = tab.get(s, {})
            peers = {k: v for k, v in cells.items() if k in PEERS}
            if PRESET not in cells or not peers:
                continue
            for text in REPORTED:
                best = min(peers, key=lambda k: statistics.mean(peers[k][text]))
                ours, theirs = cells[PRESET][text], peers[best][text]
                pr = paired_ratio(dict(zip(cells[PRESET]["seeds"], ours)), dict(zip(peers[best]["seeds"], theirs)))
                ratio = "–" if pr is None else f"{pr['mean']:.3f}" + (f" ± {pr['std']:.3f}" if pr["std"] else "")
                word = VERDICT_WORD[pr["verdict"]] if pr else "no shared seed"
                lines.append(f"| {s} | `{text}` | {best} | {_ms(theirs)} | {_ms(ours)} | {ratio} | {word} |")
        lines.append("")
    lines += ["## Cost (seed 0)", "",
              "Within one run: each stage's seconds ÷ the seconds the run spent on everything else (capture, "
              "forward passes, the base method's own solve) — the ratio the noisy machine does least to. Across "
              "runs: the run's prune seconds ÷ the base method's own run at the same setting.", "",
              "| setting | config | prune seconds | stage ÷ rest of the run | all ÷ rest of the run | ÷ base run |",
              "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        for label, cell in tab.get(s, {}).items():
            base = PRESET_BASIS.split("+")[0] if label == PRESET else label.split("+")[0]
            if "+" not in label and label != PRESET:
                continue
            total, stages = cell["prune_seconds"][0], cell["stage_seconds"][0]
            rest = total - sum(stages.values())
            per_stage = ", ".join(f"{k} {v / rest:.2f}" for k, v in stages.items())
            across = f"{total / tab[s][base]['prune_seconds'][0]:.2f}" if base in tab[s] else "–"
            lines.append(f"| {s} | {label} | {total:.0f} | {per_stage} | {total / rest:.2f} | {across} |")
    if preset:
        lines += ["", "The preset's prune time ÷ SparseGPT's (separate runs, same setting and seed; mean over the "
                  "seeds both ran): " + (", ".join(f"{s}: {r:.2f}×" for s, r in preset_cost(tab).items()) or "–") + "."]
    lines += ["", "Each run is a separate one-thread process on a shared 2-core machine: ratios across runs are noisy."]
    cost = saved_results(ROOT / "results" / "recipes_cost.json", PROTOCOL)
    if cost:
        from studies.timing import cost_text
        lines += ["", f"**Measured in one process** (`python -m studies.recipes --cost`: SparseGPT and the preset "
                  f"interleaved, one thread, seed 0, {cost['protocol']['repeats']} repeat(s)): the preset's prune time "
                  "÷ SparseGPT's = " + cost_text(cost["seconds"], cost["preset_over_sparsegpt"], "sparsegpt", PRESET)
                  + ". Target: within 2×."]
    return "\n".join(lines) + "\n"


def preset_cost(tab: dict) -> dict:
    """{setting: mean over shared seeds of the preset's prune seconds ÷ SparseGPT's}."""
    out = {}
    for s, cells in tab.items():
        if PRESET in cells and "sparsegpt" in cells:
            gpt = dict(zip(cells["sparsegpt"]["seeds"], cells["sparsegpt"]["prune_seconds"]))
            ratios = [t / gpt[seed] for seed, t in zip(cells[PRESET]["seeds"], cells[PRESET]["prune_seconds"])
                      if seed in gpt]
            if ratios:
                out[s] = statistics.mean(ratios)
    return out


COST_SETTINGS, COST_REPEATS = ("0.5", "0.7", "2:4"), 1


def cost_study() -> dict:
    """The preset's prune time ÷ SparseGPT's in one process, one thread, seed 0 (studies.timing.cost_against)."""
    from studies.timing import cost_against
    cost = cost_against(spec, COST_SETTINGS, "sparsegpt", PRESET, COST_REPEATS)
    out = {"protocol": {**PROTOCOL, "seed": 0, "repeats": COST_REPEATS, "threads": 1}, "seconds": cost["seconds"],
           "preset_over_sparsegpt": cost["ratio"], "versions": versions()}
    write_json(ROOT / "results" / "recipes_cost.json", out)
    return out


def figure(tab: dict) -> None:
    """Each config's perplexity ÷ SparseGPT's on both reported texts; error bars: std of the per-seed ratio."""
    import matplotlib.pyplot as plt
    from d2p_helpers import plots
    plots.style()
    settings = [s for s in SETTINGS if s in tab and "sparsegpt" in tab[s]]
    if not settings:
        return
    fig, axes = plt.subplots(1, len(REPORTED), figsize=(13, 4.4), sharey=True)
    labels = [label for label in dict.fromkeys(k for s in settings for k in tab[s]) if label != "magnitude"]
    width = 0.8 / max(1, len(labels))
    for ax, text in zip(axes, REPORTED):
        for i, label in enumerate(labels):
            pr = [paired_ratio(dict(zip(tab[s][label]["seeds"], tab[s][label][text])),
                               dict(zip(tab[s]["sparsegpt"]["seeds"], tab[s]["sparsegpt"][text])))
                  if label in tab[s] else None for s in settings]
            ax.bar([x + i * width for x in range(len(settings))], [r["mean"] if r else float("nan") for r in pr],
                   width, yerr=[(r["std"] or 0) if r else 0 for r in pr], capsize=2, label=label,
                   color=plots.method_color(label),
                   hatch="//" if label == PRESET else None)
        ax.axhline(1, color="k", lw=1)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(settings))], settings)
        ax.set_ylim(0.5, 2.0)
        ax.set_title(f"{text}: perplexity ÷ SparseGPT's (below 1 = better)")
    axes[0].set_ylabel("ratio to SparseGPT, same calibration draw")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, ncol=len(labels), loc="lower center",
               bbox_to_anchor=(0.5, -0.02))
    fig.subplots_adjust(bottom=0.2)
    plots.save(fig, ROOT / "figures" / "recipes.png",
               caption=f"calib news {PROTOCOL['nsamples']}x{PROTOCOL['seqlen']}; mean ± std of the per-seed ratio "
                       "over the seeds run (3 for the peers and the preset at 50%, 70%, 2:4; else 1); bars above "
                       "2.0 are cut (Wanda and RIA at 70% and 2:4)")


def report(from_saved: bool = False) -> None:
    """Write results/recipes.{json,md} and the figure from the cached runs, or (from_saved) re-render the
    markdown and figure from results/recipes.json's table. A cache holding fewer of the planned runs than the
    saved file reports is refused: it would overwrite measured cells with nothing."""
    saved_path = ROOT / "results" / "recipes.json"
    saved = read_json(saved_path) if saved_path.exists() else None
    if from_saved:
        tab, preset, n_runs = saved["table"], saved["preset"], saved["runs_present"]
    else:
        tab, n_runs = table(), sum(cached(spec(*r)) is not None for r in plan())
        refuse_a_shrinking_report(saved_path, n_runs, saved["runs_present"] if saved else 0)
        preset = choose_preset(tab)
        write_json(saved_path, {"protocol": PROTOCOL, "validation": VALIDATION, "reported": REPORTED, "table": tab,
                                "preset": preset, "runs_present": n_runs, "runs_planned": len(plan()),
                                "versions": versions()})
    write_text(ROOT / "results" / "recipes.md", markdown(tab, preset, n_runs))
    figure(tab)
    print((ROOT / "results" / "recipes.md").read_text())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="only write the files from cached runs")
    ap.add_argument("--from-saved", action="store_true",
                    help="re-render recipes.md and the figure from results/recipes.json (no cache needed)")
    ap.add_argument("--limit-minutes", type=float, default=None, help="stop starting new runs after this long")
    ap.add_argument("--cost", action="store_true", help="time the preset against SparseGPT in one process")
    a = ap.parse_args()
    if a.cost:
        from d2p_helpers.record import set_threads
        set_threads(1)
        cost_study()
    elif not (a.report or a.from_saved):
        run_all(a.limit_minutes)
    report(a.from_saved)
