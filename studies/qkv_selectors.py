"""The q/k/v comparison of the attention-aware update (issue: q/k/v selectors), on the embedded model.

Writes results/qkv_selectors.json and .md; runs are cached under results/cache/ (shared with notebooks)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from d2p_helpers.experiments import qkv_comparison, qkv_markdown  # noqa: E402
from d2p_helpers.record import versions, write_json, write_text  # noqa: E402

BASE = {"model": "smollm2-135m", "calib": "news", "nsamples": 16, "seqlen": 256, "seed": 0,
        "eval": ["wiki"], "eval_windows": 16}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sparsities", default="0.5,0.6,0.7")
    ap.add_argument("--cached-only", action="store_true", help="table from finished runs only (no new runs)")
    a = ap.parse_args()
    sps = [float(x) for x in a.sparsities.split(",")]
    rows = qkv_comparison(BASE, sps, ROOT / "results" / "cache", attention_windows=2, progress=True,
                          cached_only=a.cached_only)
    write_json(ROOT / "results" / "qkv_selectors.json", {"protocol": BASE, "rows": rows, "versions": versions()})
    write_text(ROOT / "results" / "qkv_selectors.md", qkv_markdown(rows, BASE))
    print((ROOT / "results" / "qkv_selectors.md").read_text())
