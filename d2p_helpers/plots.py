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
