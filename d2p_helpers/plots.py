"""One plotting style for every notebook and the benchmark; figures saved as PNG under figures/ and, in a
Jupyter kernel (JupyterLab, or papermill's headless runs), shown inline as well.

The backend is left to the environment: Jupyter kernels use the inline backend, scripts and pytest whatever
MPLBACKEND says (the tests set Agg for their own process, never for the kernels they start)."""
from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from .noise import by_seed, within_noise_of_best

# One colour per method in every figure (a label not listed here gets one from `method_color`'s palette, the
# same for the same label in every figure of a process). Wanda / D²-Wanda and SparseGPT / D²-SparseGPT are
# light/dark pairs of one hue, so the D² variant reads as a variant.
METHOD_COLORS = {"dense": "#444444", "magnitude": "#bbbbbb", "wanda": "#6baed6", "d2-wanda": "#08519c",
                 "sparsegpt": "#fdae6b", "d2-sparsegpt": "#d94801", "d2prune": "#31a354", "d2prune-noqkv": "#756bb1",
                 "ria": "#e7298a", "recipe": "#a6761d", "preset": "#a6761d"}
_ASSIGNED: dict = {}


def method_color(label: str) -> str:
    """The colour of a method or configuration label: METHOD_COLORS where listed, else the colour of
    matplotlib's tab20/tab20b/tab20c palettes farthest from every colour already in use, kept for that label
    (so a figure with twenty configurations has twenty colours that can be told apart)."""
    if label in METHOD_COLORS:
        return METHOD_COLORS[label]
    if label not in _ASSIGNED:
        from matplotlib import colormaps
        from matplotlib.colors import to_hex, to_rgb
        used = [to_rgb(c) for c in (*METHOD_COLORS.values(), *_ASSIGNED.values())]
        candidates = [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
        best = max(candidates, key=lambda c: min(sum((a - b) ** 2 for a, b in zip(c[:3], u)) for u in used))
        _ASSIGNED[label] = to_hex(best)
    return _ASSIGNED[label]


def style() -> None:
    try:
        import seaborn as sns
        sns.set_theme(context="notebook", style="whitegrid", palette="deep")
    except ImportError:
        plt.style.use("ggplot")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 130, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where display() reaches a notebook), False in scripts and pytest."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def show(fig) -> None:
    """Display the figure inline (image/png in the notebook) and close it so the backend does not draw it twice."""
    if in_kernel():
        from IPython.display import display
        display(fig)
        plt.close(fig)


def save(fig, path: str | Path, caption: str | None = None) -> Path:
    """Save a figure (PNG), with the protocol caption underneath when given, and show it inline in a notebook.

    The caption goes below the lowest drawn text of the figure (tick labels, axis labels, a legend under the
    axes), measured after layout, so it never collides with an x-axis label; `overlapping_texts` checks it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if caption:
        fig.canvas.draw()                         # lay out first (constrained layout included), then measure
        lowest = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()   # inches -> figure
        fig.text(0.01, min(0.0, lowest) - 0.015, caption, fontsize=7, color="#555555", ha="left", va="top",
                 wrap=True)
    fig.savefig(path)
    show(fig)
    return path


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty text boxes of a drawn figure that overlap (titles, labels, tick labels,
    annotations, legends, captions): a figure that reads has none."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = list(fig.texts) + [t for lg in fig.legends for t in lg.get_texts()]
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += [t.label1 for axis in (ax.xaxis, ax.yaxis) for t in axis._update_ticks()]   # ticks in view only
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    boxes = [(str(t.get_text())[:40], t.get_window_extent(renderer)) for t in texts
             if t.get_visible() and str(t.get_text()).strip()]
    out = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            if ba.overlaps(bb) and ba.width > 0 and bb.width > 0:
                inter_w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
                inter_h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
                if inter_w > 1 and inter_h > 1:           # more than a pixel of shared ink box
                    out.append((a, b))
    return out


def mask_image(ax, weight, title: str, rows: int = 64, cols: int = 128) -> None:
    """Kept (dark) vs pruned (light) weights of the top-left corner of a matrix."""
    m = (weight[:rows, :cols] != 0).float().cpu().numpy()
    ax.imshow(m, cmap="Greys", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])


MASK_COLORS = {"both kept": "#252525", "both pruned": "#f0f0f0", "only A keeps": "#fdae6b",
               "only B keeps": "#08519c"}


def mask_difference(ax, a, b, names: tuple[str, str], rows: int = 32, cols: int = 64) -> dict:
    """Two masks of one matrix on the rows x cols window where they disagree most: entries both keep, both
    prune, and the ones they disagree on in two colours (notebook 03). Returns how many entries of the whole
    matrix fall in each class, and the window's top-left corner."""
    import matplotlib.colors as mcolors
    import torch.nn.functional as F
    ka, kb = a != 0, b != 0
    classes = (ka & kb).int() * 0 + (~ka & ~kb).int() * 1 + (ka & ~kb).int() * 2 + (~ka & kb).int() * 3
    # the rows x cols window with the most disagreements (they can be rare: notebook 01 counts them)
    per_window = F.avg_pool2d((ka != kb).float()[None, None], (rows, cols), stride=(rows // 2, cols // 2))[0, 0]
    r, c = divmod(int(per_window.argmax()), per_window.shape[1])
    r, c = r * (rows // 2), c * (cols // 2)
    cmap = mcolors.ListedColormap(list(MASK_COLORS.values()))
    ax.imshow(classes[r:r + rows, c:c + cols].cpu().numpy(), cmap=cmap, vmin=-0.5, vmax=3.5,
              interpolation="nearest", aspect="auto", extent=(c - 0.5, c + cols - 0.5, r + rows - 0.5, r - 0.5))
    ax.grid(False)
    labels = {"both kept": "both keep", "both pruned": "both prune", "only A keeps": f"only {names[0]} keeps",
              "only B keeps": f"only {names[1]} keeps"}
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c, label=labels[k]) for k, c in MASK_COLORS.items()],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_xlabel("input column"), ax.set_ylabel("output row")
    return {**{labels[k]: int((classes == i).sum()) for i, k in enumerate(MASK_COLORS)}, "corner": (r, c)}


def nm_zoom(ax, weight, m: int, rows: int = 8, cols: int = 16) -> None:
    """An N:M mask up close: kept (dark) and pruned (light) entries, with a line after every group of m columns."""
    ax.imshow((weight[:rows, :cols] != 0).float().cpu().numpy(), cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest", aspect="auto")
    for c in range(m, cols, m):
        ax.axvline(c - 0.5, color="#d94801", lw=1.5)
    ax.set_xticks(range(cols)), ax.set_yticks(range(rows))
    ax.tick_params(labelsize=6), ax.grid(False)
    ax.set_xlabel("input column"), ax.set_ylabel("output row")


def attention_map(ax, probs, title: str, vmax: float | None = None, difference: bool = False):
    """Head-averaged attention map [T, T]; with `difference`, a pruned-minus-dense map on a diverging scale
    centred at zero (red: more attention than the dense model, blue: less)."""
    if difference:
        lim = vmax or float(probs.abs().max())
        im = ax.imshow(probs.float().cpu().numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    else:
        im = ax.imshow(probs.float().cpu().numpy(), cmap="viridis", vmin=0, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key"), ax.set_ylabel("query")
    return im


def setting_positions(settings: list) -> dict:
    """x positions for benchmark settings: the sparsities in order, then the N:M patterns after a gap. A
    pattern is not a point on the sparsity axis, so nothing should join 80% to 2:4 with a line."""
    dense = [s for s in settings if ":" not in s]
    nm = [s for s in settings if ":" in s]
    return {**{s: float(i) for i, s in enumerate(dense)}, **{s: len(dense) + 0.5 + i for i, s in enumerate(nm)}}


def settings_errorbar(ax, settings: list, ys: list, yerr=None, **kw) -> None:
    """One series over benchmark settings: a line through the sparsities, unjoined markers for N:M patterns
    (same colour and label once); the x ticks name every setting."""
    pos = setting_positions(settings)
    yerr = yerr if yerr is not None else [0] * len(ys)
    for part, style in (([s for s in settings if ":" not in s], {}), ([s for s in settings if ":" in s],
                                                                       {"ls": "none"})):
        idx = [settings.index(s) for s in part]
        if idx:
            line = ax.errorbar([pos[s] for s in part], [ys[i] for i in idx], yerr=[yerr[i] for i in idx],
                               **{"capsize": 3, **kw, **style})
            kw = {**kw, "label": None, "color": line[0].get_color()}
    ax.set_xticks(list(pos.values()), list(pos))


def ratio_text(r: dict | None, pct: bool = True) -> str:
    """'-10.6% ± 0.9 (n = 3)' (± one standard error) or '+1.2% (n = 1)'; '–' when there is nothing to show."""
    if r is None:
        return "–"
    head = f"{100 * (r['mean'] - 1):+.1f}%" if pct else f"{r['mean']:.3f}"
    if r["se"] is None:
        return f"{head} (n = 1)"
    return f"{head} ± {100 * r['se'] if pct else r['se']:.{1 if pct else 3}f} (n = {r['n']})"


def mean_text(values: list) -> str:
    """'85.59 ± 1.47 (n = 3)' over seeds, or '214.57 (n = 1)': a single seed never prints '± 0.00'."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f} (n = 1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n = {len(values)})"


def _axis_position(value: float, grid: list) -> float:
    """Index coordinate of a value on a categorical grid axis (linear between, and beyond, grid values)."""
    if len(grid) == 1:
        return 0.0
    for i in range(len(grid) - 1):
        if value <= grid[i + 1] or i == len(grid) - 2:
            return i + (value - grid[i]) / (grid[i + 1] - grid[i])
    return 0.0


def grid_image(ax, fig, cells: dict, title: str, mark: tuple | None = None) -> None:
    """cells: {(r1, r2): ppl, or {seed: ppl}} as a labelled heat map (lower is better: reversed map).
    r1 = λ₁ and r2 = −λ₂ (the code subtracts r2 · W² x̂²; notebooks/NOTATION.md).

    With seeds, each cell shows mean ± std, and the cells the paired noise rule cannot tell from the best
    (d2p_helpers.noise) are hatched.
    mark = (r1, r2, label) draws a point there (outside the grid when it lies outside)."""
    seeded = any(isinstance(v, dict) for v in cells.values())
    means = {k: statistics.mean(v.values()) if isinstance(v, dict) else v for k, v in cells.items()}
    rows, cols = sorted({r for r, _ in cells}), sorted({c for _, c in cells})
    mat = [[means.get((r, c), float("nan")) for c in cols] for r in rows]
    im = ax.imshow(mat, cmap="viridis_r")
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols]), ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel("r2 = −λ₂"), ax.set_ylabel("r1 = λ₁"), ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
    if seeded:
        seeded_cells = {k: v for k, v in cells.items() if isinstance(v, dict)}
        close = within_noise_of_best(seeded_cells)
        for (r, c), v in cells.items():
            i, j = rows.index(r), cols.index(c)
            sd = f"\n± {statistics.stdev(v.values()):.0f}" if isinstance(v, dict) and len(v) > 1 else "\n(n = 1)"
            light = means[(r, c)] < (min(means.values()) + max(means.values())) / 2   # viridis_r: low = yellow
            ax.text(j, i, f"{means[(r, c)]:.0f}{sd}", ha="center", va="center", fontsize=7,
                    color="black" if light else "white")
            if (r, c) in close:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#888888", lw=0))
        if close:
            n = min(len(v) for v in seeded_cells.values())
            ax.set_title(f"{title}\nhatched: not behind the best beyond seed noise (paired, {n} seeds)", fontsize=8)
    if mark is not None:
        x, y = _axis_position(mark[1], cols), _axis_position(mark[0], rows)
        ax.plot([x], [y], marker="*", ms=14, color="#c44e52", mec="white", clip_on=False, label=mark[2])
        ax.set_xlim(min(-0.5, x - 0.5), max(len(cols) - 0.5, x + 0.5))
        ax.set_ylim(max(len(rows) - 0.5, y + 0.5), min(-0.5, y - 0.5))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.18))


def hparam_figure(studies: dict, paper_lambda: dict, paper_nsamples: dict, mark: tuple | None = None):
    """The three knob studies of studies/hparams.py beside the paper's OPT-125M numbers (another model).

    mark = (r1, r2, label): a point on both λ grids, e.g. notebook 02's fitted λ as (λ, λ − λ²/2)."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    if studies["lambda"]:
        sp = studies["lambda"][0]["sparsity"]
        grid_image(axes[0], fig, {(r["r1"], r["r2"]): by_seed(r["ppl"], r["seeds"]) for r in studies["lambda"]},
                    f"ours: ppl over (r1, r2) at {sp:.0%}", mark)
    grid_image(axes[1], fig, paper_lambda, "paper OPT-125M at 80% (another model)", mark)
    for sp in sorted({r["sparsity"] for r in studies["s"]}):
        rs = [r for r in studies["s"] if r["sparsity"] == sp]
        ref = next((statistics.mean(r["ppl"]) for r in rs if r["s"] != "auto" and float(r["s_value"]) == 1500), None)
        ref = ref or statistics.mean(rs[0]["ppl"])
        axes[2].errorbar([r["s"] if isinstance(r["s"], str) else f"{r['s']:g}" for r in rs],
                         [statistics.mean(r["ppl"]) / ref for r in rs], yerr=[statistics.pstdev(r["ppl"]) / ref for r in rs],
                         marker="o", capsize=3, label=f"{sp:.0%}")
    axes[2].axhline(1, color="#444444", lw=0.8)
    axes[2].set_xlabel("s"), axes[2].set_ylabel("ppl ÷ ppl at s = 1500")
    axes[2].set_title("ours: scale s (auto = normalised D² term)", fontsize=9), axes[2].legend(fontsize=8)
    for norm in ("authors", "mean"):
        rs = [r for r in studies["nsamples"] if r["d2_norm"] == norm]
        axes[3].errorbar([r["nsamples"] for r in rs], [statistics.mean(r["ppl"]) for r in rs],
                         yerr=[statistics.pstdev(r["ppl"]) for r in rs], marker="o", capsize=3, label=f"ours, {norm}")
    twin = axes[3].twinx()
    twin.plot(list(paper_nsamples), list(paper_nsamples.values()), "k:", marker="s",
              label="paper OPT-125M, 80% (right axis)")
    axes[3].set_xscale("log", base=2), axes[3].set_xlabel("calibration windows N"), axes[3].set_ylabel("ppl (ours)")
    axes[3].set_title("N: ours vs the paper (another model)", fontsize=9)
    twin.grid(False), twin.set_ylabel("paper ppl")
    axes[3].legend(fontsize=7, loc="lower left"), twin.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
