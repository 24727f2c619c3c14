"""One plotting style for every notebook and the benchmark; figures saved as PNG under figures/."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() in ("agg", "") else None
import matplotlib.pyplot as plt  # noqa: E402

METHOD_COLORS = {"dense": "#444444", "magnitude": "#bbbbbb", "wanda": "#4c72b0", "sparsegpt": "#dd8452",
                 "d2-wanda": "#64b5cd", "d2-sparsegpt": "#c44e52", "d2prune": "#55a868"}


def style() -> None:
    try:
        import seaborn as sns
        sns.set_theme(context="notebook", style="whitegrid", palette="deep")
    except ImportError:
        plt.style.use("ggplot")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 130, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def save(fig, path: str | Path, caption: str | None = None) -> Path:
    """Save a figure (PNG), with the protocol caption underneath when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if caption:
        fig.text(0.01, -0.02, caption, fontsize=7, color="#555555", ha="left", va="top", wrap=True)
    fig.savefig(path)
    return path


def mask_image(ax, weight, title: str, rows: int = 64, cols: int = 128) -> None:
    """Kept (dark) vs pruned (light) weights of the top-left corner of a matrix."""
    m = (weight[:rows, :cols] != 0).float().cpu().numpy()
    ax.imshow(m, cmap="Greys", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])


def attention_map(ax, probs, title: str, vmax: float | None = None) -> None:
    """Head-averaged attention map [T, T]."""
    im = ax.imshow(probs.float().cpu().numpy(), cmap="viridis", vmin=0, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key"), ax.set_ylabel("query")
    return im


def _grid_image(ax, fig, cells: dict, title: str) -> None:
    """cells: {(row value, column value): number} as a labelled heat map (lower is better: reversed map)."""
    rows, cols = sorted({r for r, _ in cells}), sorted({c for _, c in cells})
    mat = [[cells.get((r, c), float("nan")) for c in cols] for r in rows]
    im = ax.imshow(mat, cmap="viridis_r")
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols]), ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel("λ₂"), ax.set_ylabel("λ₁"), ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)


def hparam_figure(studies: dict, paper_lambda: dict, paper_nsamples: dict):
    """The three knob studies of studies/hparams.py beside the paper's OPT-125M numbers (another model)."""
    import statistics
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    if studies["lambda"]:
        sp = studies["lambda"][0]["sparsity"]
        _grid_image(axes[0], fig, {(r["r1"], r["r2"]): statistics.mean(r["ppl"]) for r in studies["lambda"]},
                    f"ours: ppl over (λ₁, λ₂) at {sp:.0%}")
    _grid_image(axes[1], fig, paper_lambda, "paper OPT-125M at 80% (another model)")
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
