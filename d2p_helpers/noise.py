"""One rule for "beyond seed noise", used by every study, figure and notebook.

Two configurations are compared on the calibration draws they share. For each shared seed s the ratio
r_s = a_s / b_s is taken on the same calibration windows, so most of a draw's luck cancels. Over the n shared
seeds, r̄ is the mean of the ratios and SE their standard error. A is ahead (or behind) beyond seed noise when
|r̄ − 1| > t₀.₉₇₅(n − 1) · SE, a paired t-test at 95%. A single seed gives no noise estimate and so no verdict.

A knob (k settings of one parameter, each run on the same seeds) moves the result beyond seed noise when some
setting is behind the best setting under this same paired rule. Notebook 06 shows the rule at work on the
benchmark, and notebook 14 applies it to every claim."""
from __future__ import annotations

import math
import statistics

# two-sided 95% Student-t critical values by degrees of freedom (more than 5: 2.0)
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57}

AHEAD, BEHIND, TIE, ONE_SEED = ("lower beyond seed noise", "higher beyond seed noise", "within seed noise",
                                "one seed: no noise estimate")
# the table word for each verdict of `paired_ratio`
VERDICT_WORD = {AHEAD: "**ahead**", BEHIND: "**behind**", TIE: "tie (within seed noise)",
                ONE_SEED: "one seed: no verdict"}


def paired_ratio(a: dict, b: dict) -> dict | None:
    """a / b over the calibration seeds both have ({seed: value} each). Returns the mean, std and standard
    error of the per-seed ratio, n, the seeds and the verdict; None when no seed is shared."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    r = [a[sd] / b[sd] for sd in seeds]
    mean, n = statistics.mean(r), len(r)
    std = statistics.stdev(r) if n > 1 else None
    se = std / math.sqrt(n) if n > 1 else None
    if se is None:
        verdict = ONE_SEED
    elif abs(mean - 1) > T95.get(n - 1, 2.0) * se:
        verdict = AHEAD if mean < 1 else BEHIND
    else:
        verdict = TIE
    return {"mean": mean, "std": std, "se": se, "n": n, "seeds": seeds, "verdict": verdict}


def by_seed(values: list, seeds: list) -> dict:
    """{seed: value} from a list measured over `seeds` in order; a list of another length is refused."""
    if len(values) != len(seeds):
        raise ValueError(f"{len(values)} values for seeds {list(seeds)}: say which seed each value belongs to")
    return dict(zip(seeds, values))


def best_cell(cells: dict) -> object:
    """The key of the cell ({key: {seed: value}}) with the lowest mean."""
    return min(cells, key=lambda k: statistics.mean(cells[k].values()))


def within_noise_of_best(cells: dict) -> set:
    """Keys of the cells ({key: {seed: value}}) that the paired rule cannot tell from the best cell, the best
    included. Only cells sharing two or more seeds with the best take part; when none does, there is no answer
    and the set is empty."""
    if not cells:
        return set()
    best = best_cell(cells)
    paired = {k: paired_ratio(v, cells[best]) for k, v in cells.items() if k != best}
    paired = {k: pr for k, pr in paired.items() if pr and pr["n"] > 1}
    return {best, *(k for k, pr in paired.items() if pr["verdict"] != BEHIND)} if paired else set()


def knob_effect(cells: dict) -> str:
    """How far a knob moves the result ({setting: {seed: value}}), and whether that is beyond seed noise: some
    setting behind the best one under the paired rule."""
    cells = {k: v for k, v in cells.items() if len(v) > 1}
    if len(cells) < 2:
        return "too few settings with two or more seeds to compare"
    best = best_cell(cells)
    means = {k: statistics.mean(v.values()) for k, v in cells.items()}
    worst = max(means, key=means.get)
    lo, hi = means[best], means[worst]
    verdicts = {k: paired_ratio(v, cells[best]) for k, v in cells.items() if k != best}
    behind = [k for k, pr in verdicts.items() if pr and pr["verdict"] == BEHIND]
    pr = verdicts[worst] if worst != best else None
    worst_text = (f"the worst ÷ the best, paired: {100 * (pr['mean'] - 1):+.1f}% ± {100 * pr['se']:.1f} "
                  f"(n = {pr['n']})" if pr and pr["se"] is not None else "no shared seeds with the best")
    return (f"means span {lo:.2f}–{hi:.2f} ({(hi - lo) / lo:.0%} of the best); {worst_text}; {len(behind)} of "
            f"{len(cells) - 1} other settings behind the best: {'beyond' if behind else 'within'} seed noise")
