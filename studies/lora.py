"""LoRA recovery on the embedded model: SparseGPT, Wanda and D²Prune at 60% and 2:4, before and after.

Writes results/lora.json and results/lora.md (the LoRA issue's measurement, CPU defaults). Notebook 12
shows the same study and reads results/lora.json when its parameters match."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from d2p_helpers.finetune import recovery_markdown, recovery_study  # noqa: E402
from d2p_helpers.record import versions, write_json, write_text  # noqa: E402

PROTOCOL = {"model": "smollm2-135m", "methods": ["sparsegpt", "wanda", "d2prune"], "settings": ["0.6", "2:4"],
            "calib": "news", "nsamples": 16, "seqlen": 512, "seed": 0, "steps": 100, "train_seqlen": 128,
            "lora_r": 8, "lora_alpha": 16, "eval_data": "wiki", "eval_windows": 8,
            "zeroshot_tasks": ["hellaswag", "piqa", "arc_easy"], "zeroshot_limit": 100}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default=str(ROOT / "runs" / "lora"), help="checkpoints and finished rows (resumable)")
    ap.add_argument("--settings", default=None,
                    help="only these settings (comma list), e.g. one per process; the results are written "
                         "only by a run over all settings, which reuses the finished rows")
    a = ap.parse_args()
    p = PROTOCOL
    study = recovery_study(a.work, **{**p, "settings": a.settings.split(",") if a.settings else p["settings"]})
    if a.settings:
        sys.exit(0)
    write_json(ROOT / "results" / "lora.json", {"protocol": p, **study, "versions": versions()})
    write_text(ROOT / "results" / "lora.md", recovery_markdown(study, p))
    print((ROOT / "results" / "lora.md").read_text())
