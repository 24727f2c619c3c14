"""The study figures, drawn from the committed results: no two text boxes overlap (captions, labels, ticks,
titles, legends). Notebook figures go through the same `plots.save`, whose caption placement this checks."""
import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    from d2p_helpers import plots
    figs, real = [], plots.save

    def keep(fig, path, caption=None):
        figs.append(fig)
        return real(fig, tmp_path / Path(path).name, caption)
    monkeypatch.setattr(plots, "save", keep)
    return figs


def test_a_caption_never_lands_on_an_axis_label(drawn):
    import matplotlib.pyplot as plt

    from d2p_helpers import plots
    fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
    ax.plot([0.5, 0.6, 0.7], [10, 20, 40])
    ax.set_xlabel("sparsity"), ax.set_ylabel("perplexity"), ax.set_title("a title")
    plots.save(fig, "x.png", caption="calib news 16x256, eval wiki 16x256; a caption long enough to wrap " * 2)
    assert plots.overlapping_texts(fig) == []
    bad, ax = plt.subplots(figsize=(6, 3))
    ax.set_xlabel("sparsity")
    bad.text(0.3, 0.02, "a caption over the axis label", va="bottom")
    assert plots.overlapping_texts(bad), "the check must see a real collision"


@pytest.mark.parametrize("protocol", ["quick", "paper-n"])
def test_benchmark_figure_reads(protocol, drawn, monkeypatch):
    from studies import bench
    for key in bench.PAPER_N:                 # use_protocol rewrites module globals: undone after the test
        monkeypatch.setattr(bench, key, getattr(bench, key))
    bench.use_protocol(protocol)
    table = json.loads((ROOT / "results" / f"{bench.NAME}.json").read_text())["table"]
    bench.figure(table)
    from d2p_helpers.plots import overlapping_texts
    assert drawn and overlapping_texts(drawn[-1]) == []


def test_recipes_figure_reads(drawn):
    from d2p_helpers.plots import overlapping_texts
    from studies import recipes
    recipes.figure(recipes.table() or json.loads((ROOT / "results" / "recipes.json").read_text())["table"])
    assert drawn and overlapping_texts(drawn[-1]) == []


def test_one_colour_per_method_across_figures():
    from d2p_helpers.plots import method_color
    from d2p_helpers.prune.methods import METHODS as METHOD_NAMES
    from studies import recipes
    from matplotlib.colors import to_rgb
    labels = list(METHOD_NAMES) + ["dense", "d2prune-noqkv", "recipe"]
    labels += [k for k in recipes.configs("0.7") if k not in labels and k != "preset"]   # the recipe figure's bars
    rgb = {k: [255 * c for c in to_rgb(method_color(k))] for k in labels}
    close = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]
             if sum((x - y) ** 2 for x, y in zip(rgb[a], rgb[b])) ** 0.5 < 40]
    assert close == [], close                                                  # no two labels look alike
    configs = labels
    assert method_color(configs[0]) == method_color(configs[0])               # stable within a process


def test_n_m_patterns_sit_apart_from_the_sparsity_axis_and_no_line_joins_them():
    import matplotlib.pyplot as plt

    from d2p_helpers import plots
    settings = ["0.5", "0.7", "0.8", "2:4", "4:8"]
    pos = plots.setting_positions(settings)
    assert pos["0.8"] == 2 and pos["2:4"] - pos["0.8"] > 1 and pos["4:8"] > pos["2:4"]
    fig, ax = plt.subplots()
    plots.settings_errorbar(ax, settings, [1, 2, 4, 3, 2.5], [0.1] * 5, marker="o", label="wanda", color="C0")
    joined = [ln for ln in ax.get_lines() if ln.get_linestyle() not in ("None", "none", "")]
    assert [list(ln.get_xdata()) for ln in joined] == [[0.0, 1.0, 2.0]]     # the line stops at 80%
    assert [t.get_text() for t in ax.get_xticklabels()] == settings
    assert [h.get_label() for h in ax.get_legend_handles_labels()[0]] == ["wanda"]   # one legend entry
    plt.close(fig)
