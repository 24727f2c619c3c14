"""Error correction toward the dense model: does a recipe also win on text from another domain?

The recipe study's stages fit the calibration text (results/recipes.md). This study adds the stages that
correct toward the dense model (d2p_helpers.prune: --sequential, --reconstruct-target dense, --block-tune,
--correct scale) and self-generated calibration text (--calib news+self), and runs every peer on both
calibration texts, so the table separates what the text buys from what the method buys.

Protocol: calibration `news` 256 × 128 (32,768 tokens; the recipe study's 8k were too few for a refit);
perplexity on all four texts at 128 windows × 128 tokens where the text has them: `wiki` and `wiki:val`
16,384 tokens each, `news:test` all of it (119 windows, 15,232 tokens), `news:val` all of it (63 windows,
8,064 tokens). `wiki` test is the other-domain text, `news:test` the in-domain one; every choice (which
composition is the preset) looks at `wiki:val` and `news:val` only.

    python -m studies.error_correction [--limit-minutes 60] [--report]

Runs go in the studies' run cache (resumable, shared by several workers). Writes results/error_correction.{json,md}.
"""
from __future__ import annotations

import argparse
import math
import statistics

from d2p_helpers.noise import VERDICT_WORD, by_seed, paired_ratio
from d2p_helpers.prune.cli_args import option_flags
from d2p_helpers.record import read_json, versions, write_json, write_text
from studies.recipes import cell_table, val_score
from studies.runs import ROOT, RunSpec, cached, refuse_a_shrinking_report, run_plan, seed_cache_from

PROTOCOL = {"model": "smollm2-135m", "calib": "news", "nsamples": 256, "seqlen": 128,
            "eval": ["wiki", "news:test", "wiki:val", "news:val"], "eval_windows": 128}
MIX = "news+self"
VALIDATION, REPORTED = ("wiki:val", "news:val"), ("wiki", "news:test")
OTHER_DOMAIN, IN_DOMAIN = "wiki", "news:test"
SETTINGS = ["0.5", "0.6", "0.7", "0.8", "2:4", "4:8"]
PRIORITY = ["2:4", "0.7", "0.5", "0.6", "0.8", "4:8"]
SEEDED = {"0.7": [0, 1, 2], "2:4": [0, 1, 2], "0.5": [0, 1, 2]}
NOQKV = ("d2prune", {"frozen": "all"})
DENSE_CG = {"reconstruct": "cg", "reconstruct_target": "dense"}
TUNE = {"block_tune": 50, "block_tune_lr": 1e-3}   # lr from results/block_tune_lr.md; 4 windows per step, 1/8 held out
PEERS = {"wanda": ("wanda", {}), "sparsegpt": ("sparsegpt", {}), "ria": ("ria", {}), "d2prune": ("d2prune", {})}
CANDIDATES = {
    "recipe-preset": ("d2prune", {"frozen": "all", "layer_sparsity": "owl", "refine": "dsnot", "reconstruct": "cg"}),
    "noqkv+dense": ("d2prune", {"frozen": "all", **DENSE_CG}),
    "noqkv+seq+dense": ("d2prune", {"frozen": "all", "sequential": True, **DENSE_CG}),
    "noqkv+seq+dense+tune": ("d2prune", {"frozen": "all", "sequential": True, **DENSE_CG, **TUNE}),
    # what --sequential buys next to the tuning (it is 45% of the seq+dense+tune run's time at 2:4)
    "noqkv+dense+tune": ("d2prune", {"frozen": "all", **DENSE_CG, **TUNE}),
    "noqkv+seq+dense+scale": ("d2prune", {"frozen": "all", "sequential": True, **DENSE_CG, "correct": "scale"}),
    "sparsegpt+seq+dense": ("sparsegpt", {"sequential": True, **DENSE_CG}),
}
ON_MIX = ("sparsegpt", "d2prune", "wanda", "ria", "noqkv+dense+tune", "noqkv+seq+dense+tune", "noqkv+seq+dense")


def configs(setting: str) -> dict:
    """label -> (method, options); `@mix`: the same config calibrated on news+self. OWL is unstructured only."""
    out = {**PEERS, **CANDIDATES}
    if ":" in setting:
        method, opts = out["recipe-preset"]
        out["recipe-preset"] = (method, {k: v for k, v in opts.items() if k != "layer_sparsity"})
    for label in ON_MIX:
        method, opts = out[label]
        out[f"{label}@mix"] = (method, {**opts, "calib": MIX})
    return out


def spec(label: str, setting: str, seed: int) -> RunSpec:
    method, options = configs(setting)[label]
    options = dict(options)
    protocol = {**PROTOCOL, "calib": options.pop("calib", PROTOCOL["calib"])}
    return RunSpec.make(method, setting, options, seed=seed, **protocol)


# The seeded comparison: the best peer at 2:4 seed 0 on either calibration text (SparseGPT on both), and the
# candidate of PRESET_POOL (below) nearest the cost target.
CORE = ("sparsegpt", "sparsegpt@mix", "noqkv+dense+tune@mix")
SEEDED_PEERS = (*CORE, "d2prune", "d2prune@mix")
FIRST = ("sparsegpt", "sparsegpt@mix", "d2prune", "d2prune@mix", "noqkv+dense+tune", "noqkv+dense+tune@mix",
         "wanda", "recipe-preset")
OTHER_SETTINGS = (*PEERS, "sparsegpt@mix", "noqkv+dense+tune", "noqkv+dense+tune@mix", "recipe-preset")


def plan() -> list[tuple[str, str, int]]:
    """2:4 with its three seeds for the core comparison first; then, at 70% and then 50%, the seeded peers and
    the candidate with all three seeds (so each lead setting reaches a verdict before the next starts); then the
    rest of the headline configs at seed 0, the other seeds at 2:4, every config at the three lead settings, and
    peers and the candidates at the other settings. Cut from the first plan (162 runs, about 150 core-hours
    here): the --sequential and scale compositions at 60%, 80% and 4:8."""
    lead, rest = PRIORITY[:3], PRIORITY[3:]
    runs = [(label, "2:4", seed) for seed in (0, 1, 2) for label in CORE]
    runs += [(label, s, seed) for s in lead[1:] for seed in (0, 1, 2) for label in SEEDED_PEERS]
    runs += [(label, s, 0) for s in lead[1:] for label in FIRST]
    runs += [(label, s, seed) for s in lead for seed in (1, 2) for label in SEEDED_PEERS]
    runs += [(label, s, 0) for s in lead for label in configs(s)]
    runs += [(label, s, 0) for s in rest for label in OTHER_SETTINGS]
    return list(dict.fromkeys(runs))


def table() -> dict:
    return cell_table(SETTINGS, configs, spec, SEEDED, PROTOCOL["eval"])


# --sequential costs 3x SparseGPT on its own (2:4 seed 0: 1944 of 4321 s) for 3% on both texts: it stays an
# option, out of the preset pool, unless seeds show its gain beyond noise on both texts.
PRESET_POOL = tuple(label for label, (_, opts) in CANDIDATES.items() if not opts.get("sequential"))


def choose_preset(tab: dict) -> dict | None:
    """The candidate of PRESET_POOL with the best mean log validation score ÷ the best peer (either
    calibration text), over the settings where it and a peer ran at seed 0. Reads wiki:val and news:val only."""
    peer_labels = [p for s in tab for p in tab[s] if p.split("@")[0] in PEERS]
    cands = {label for s in tab for label in tab[s] if label.split("@")[0] in PRESET_POOL}
    scores = {}
    for label in sorted(cands):
        vals = [math.log(val_score(tab[s][label]) / min(val_score(tab[s][p]) for p in tab[s] if p in peer_labels))
                for s in tab if label in tab[s] and any(p in tab[s] for p in peer_labels)]
        if vals:
            scores[label] = (statistics.mean(vals), len(vals))
    if not scores:
        return None
    most = max(n for _, n in scores.values())
    best = min((k for k, (_, n) in scores.items() if n == most), key=lambda k: scores[k][0])
    method, options = configs("0.5")[best]
    return {"label": best, "validation_log_ratio_to_best_peer": {k: v[0] for k, v in scores.items()},
            "settings_compared": most, "flags": ["--method", method, *option_flags(options)]}


def ratio_cell(pr: dict | None) -> str:
    """A paired ratio as 'mean ± std (n=k)', '(n=1)' for one seed, '–' when no seed is shared."""
    if pr is None:
        return "–"
    return f"{pr['mean']:.3f}" + (f" ± {pr['std']:.3f}" if pr["std"] is not None else "") + f" (n={pr['n']})"


def _ms(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})" if len(values) > 1 \
        else f"{values[0]:.2f} (n=1)"


def dense_line() -> str:
    """This protocol's dense perplexities (results/dense_baselines.json) and what evaluating one model costs."""
    from studies.dense_baselines import SAVED, row_for_cut
    row = row_for_cut(PROTOCOL["eval"], PROTOCOL["eval_windows"], PROTOCOL["seqlen"]) if SAVED.exists() else None
    if row is None:
        return "Dense: not measured for this protocol yet (`python -m studies.dense_baselines`)."
    cost = f"; evaluating one model on the four texts took {row['seconds']:.0f} s (one thread)"
    return ("Dense (this protocol's row of `results/dense_baselines.md`): "
            + ", ".join(f"`{t}` {v:.2f}" for t, v in row["ppl"].items()) + cost + ".")


def markdown(tab: dict, preset: dict | None, n_runs: int) -> str:
    p = PROTOCOL
    lines = ["# Error correction toward the dense model", "",
             f"Model `{p['model']}`; calibration `{p['calib']}` {p['nsamples']} × {p['seqlen']} "
             f"({p['nsamples'] * p['seqlen']:,} tokens), or `{MIX}` (half the windows written by the dense model "
             "itself, `@mix`); perplexity at up to "
             f"{p['eval_windows']} windows × {p['seqlen']} tokens per text. `{OTHER_DOMAIN}` test is the other-domain "
             f"text, `{IN_DOMAIN}` the in-domain one; the preset is chosen on `wiki:val` and `news:val` only. "
             "noqkv: D²Prune with none of q/k/v updated; seq: --sequential; dense: "
             f"{' '.join(option_flags(DENSE_CG))}; tune: {' '.join(option_flags(TUNE))}; scale: --correct scale. "
             f"{n_runs} of {len(plan())} planned runs present. Generated by `studies/error_correction.py`.", "",
             dense_line(), ""]
    if preset:
        r = math.exp(preset["validation_log_ratio_to_best_peer"][preset["label"]])
        lines += [f"**Validation's choice so far:** `{preset['label']}` (`d2p prune {' '.join(preset['flags'])}`), "
                  f"over {preset['settings_compared']} setting(s) at seed 0, among the candidates run so far; its "
                  f"validation score (geometric mean of `wiki:val` and `news:val`) ÷ the best peer's: {r:.3f} "
                  f"({'ahead of' if r < 1 else 'behind'} the best peer on validation).", ""]
    for text in REPORTED + VALIDATION:
        role = {"wiki": "other domain, reported", "news:test": "in domain, reported"}.get(text, "validation")
        settings = [s for s in SETTINGS if s in tab]
        lines += [f"## Perplexity, `{text}` ({role})", "", "| config | " + " | ".join(settings) + " |",
                  "|---|" + "---|" * len(settings)]
        for label in dict.fromkeys(k for s in settings for k in tab[s]):
            lines.append(f"| {label} | " + " | ".join(_ms(tab[s][label][text]) if label in tab[s] else "–"
                                                      for s in settings) + " |")
        lines.append("")
    if preset:
        lines += ["## Validation's choice against the best peer, on each calibration text", "",
                  "The best peer (lowest mean) among those calibrated on `news`, and among those calibrated on "
                  f"`{MIX}` (the same text as the choice when it is an `@mix` config); the ratio is paired per "
                  "calibration seed, mean ± std, and the verdict follows the paired noise rule "
                  "(`d2p_helpers.noise`).", "",
                  "| setting | text | peers' calibration | best peer | peer ppl | choice ppl | choice ÷ peer | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in verdicts(tab, preset["label"]):
            lines.append(f"| {row['setting']} | `{row['text']}` | {row['peer_calib']} | {row['peer']} | "
                         f"{_ms(row['peer_ppl'])} | {_ms(row['ppl'])} | {ratio_cell(row['paired'])} | "
                         f"{row['verdict']} |")
        lines.append("")
        cost = saved_cost(preset["label"])
        if cost:
            from studies.timing import cost_text
            lines += [f"**Cost, measured in one process** (`python -m studies.error_correction --cost`: SparseGPT "
                      f"and `{preset['label']}` interleaved, one thread, seed 0): its prune time ÷ SparseGPT's = "
                      + cost_text(cost["seconds"], cost["ratio"], "sparsegpt", preset["label"])
                      + ". Target: within 2×.", ""]
    lines += ["## Cost (seed 0): each stage's seconds ÷ the rest of the same run", "",
              "| setting | config | prune seconds | stages |", "|---|---|---|---|"]
    for s in SETTINGS:
        for label, cell in tab.get(s, {}).items():
            total, stages = cell["prune_seconds"][0], cell["stage_seconds"][0]
            rest = total - sum(stages.values())
            lines.append(f"| {s} | {label} | {total:.0f} | " + (", ".join(f"{k} {v / rest:.2f}" for k, v in stages.items())
                                                                 or "–") + " |")
    lines += ["", "Each run is a separate one-thread process on a shared 2-core machine: times across runs are noisy."]
    return "\n".join(lines) + "\n"


SAVED = ROOT / "results" / "error_correction.json"
COST = ROOT / "results" / "error_correction_cost.json"
COST_SETTINGS, COST_REPEATS = ("2:4",), 1


def verdicts(tab: dict, label: str) -> list[dict]:
    """Per setting and reported text: `label` against the best peer calibrated on `news` and the best one on
    the mixed text, paired per seed."""
    rows = []
    for s in SETTINGS:
        cells = tab.get(s, {})
        if label not in cells:
            continue
        for text in REPORTED:
            for calib, group in (("news", lambda k: "@" not in k), (MIX, lambda k: k.endswith("@mix"))):
                peers = {k: v for k, v in cells.items() if k.split("@")[0] in PEERS and group(k)}
                if not peers:
                    continue
                best = min(peers, key=lambda k: statistics.mean(peers[k][text]))
                ours, theirs = cells[label], peers[best]
                pr = paired_ratio(by_seed(ours[text], ours["seeds"]), by_seed(theirs[text], theirs["seeds"]))
                rows.append({"setting": s, "text": text, "peer_calib": calib, "peer": best, "peer_ppl": theirs[text],
                             "ppl": ours[text], "paired": pr,
                             "verdict": VERDICT_WORD[pr["verdict"]] if pr else "no shared seed"})
    return rows


def saved_cost(label: str) -> dict | None:
    """The one-process cost measurement, if it was made for this label under this protocol."""
    if not COST.exists():
        return None
    cost = read_json(COST)
    same = cost["candidate"] == label and {k: cost["protocol"].get(k) for k in PROTOCOL} == PROTOCOL
    return cost if same else None


def cost_study(label: str) -> None:
    from studies.timing import cost_against
    cost = cost_against(spec, COST_SETTINGS, "sparsegpt", label, COST_REPEATS)
    method, options = configs(COST_SETTINGS[0])[label]
    write_json(COST, {"protocol": {**PROTOCOL, "seed": 0, "repeats": COST_REPEATS, "threads": 1}, "candidate": label,
                      "flags": ["--method", method, *option_flags(options)], **cost, "versions": versions()})


def records() -> list[dict]:
    """The planned runs present in the cache, each with its plan coordinates (label, setting, seed)."""
    return [{**rec, "error_correction": {"label": label, "setting": s, "seed": seed}}
            for label, s, seed in plan() if (rec := cached(spec(label, s, seed))) is not None]


def import_records() -> int:
    """Seed the run cache from the committed results file, so a fresh clone resumes the plan."""
    return seed_cache_from(SAVED, "error_correction", spec, "error-correction")   # a dropped label: KeyError


def report() -> None:
    tab = table()
    recs = records()
    n_runs = len(recs)
    saved = SAVED
    refuse_a_shrinking_report(saved, n_runs, read_json(saved)["runs_present"] if saved.exists() else 0)
    preset = choose_preset(tab)
    write_json(saved,
               {"protocol": PROTOCOL, "mix": MIX, "validation": VALIDATION, "reported": REPORTED,
                "other_domain": OTHER_DOMAIN, "table": tab, "preset": preset,
                "verdicts": verdicts(tab, preset["label"]) if preset else [], "runs_present": n_runs,
                "runs_planned": len(plan()), "versions": versions(), "records": recs})
    write_text(ROOT / "results" / "error_correction.md", markdown(tab, preset, n_runs))
    print((ROOT / "results" / "error_correction.md").read_text())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="only write the files from cached runs")
    ap.add_argument("--limit-minutes", type=float, default=None, help="stop starting new runs after this long")
    ap.add_argument("--cost", metavar="LABEL", choices=sorted(configs("2:4")),
                    help="time LABEL against SparseGPT in one process at " + ", ".join(COST_SETTINGS))
    a = ap.parse_args()
    if a.cost:
        from d2p_helpers.record import set_threads
        set_threads(1)
        cost_study(a.cost)
    if (n := import_records()):
        print(f"[error-correction] {n} runs added to the cache from {SAVED.name}")
    if not (a.report or a.cost):
        run_plan(plan(), spec, a.limit_minutes, "error-correction")
    report()
