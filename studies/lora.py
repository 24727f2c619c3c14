"""LoRA recovery on the embedded model: SparseGPT, Wanda and D²Prune at 60% and 2:4, before and after.

Writes results/lora.json and results/lora.md (the LoRA issue's measurement, CPU defaults). Notebook 12
shows the same study and reads results/lora.json when its parameters match."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from d2p_helpers.record import versions, write_json, write_text
from studies.runs import ROOT

@dataclass(frozen=True)
class RecoveryProtocol:
    """Everything that decides a recovery row's numbers (the record's protocol; a finished row is reused only
    under the same one). Field order is the order results/lora.json records them in."""
    model: str
    methods: tuple = ("sparsegpt", "wanda", "d2prune")
    settings: tuple = ("0.6", "2:4")
    calib: str = "news"
    nsamples: int = 16
    seqlen: int = 512
    seed: int = 0
    steps: int = 100
    train_seqlen: int = 128
    lora_r: int = 8
    lora_alpha: int = 16
    eval_data: str = "wiki"
    eval_windows: int = 8
    zeroshot_tasks: tuple = ("hellaswag", "piqa", "arc_easy")
    zeroshot_limit: int = 100

    @classmethod
    def from_dict(cls, d: dict) -> "RecoveryProtocol":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PROTOCOL = RecoveryProtocol(model="smollm2-135m")


def recovery_study(work_dir: str | Path, protocol: RecoveryProtocol, progress: bool = True) -> dict:
    """The paper's Table 4 question on one model: prune with each method, measure, LoRA-tune on the
    calibration text, measure again. Returns {"dense": ..., "rows": [...]} with perplexity, zero-shot
    mean, the training losses and each q projection's sparsity before and after (they must agree)."""
    import copy
    from d2p_helpers import zeroshot
    from d2p_helpers.data import eval_windows as make_windows
    from d2p_helpers.evaluate import perplexity
    from d2p_helpers.finetune import finetune
    from d2p_helpers.masks import sparsity_of
    from d2p_helpers.models import projection
    from d2p_helpers.notebook import dense_model
    from d2p_helpers.prune import prune, setting_kwargs
    p = protocol
    base, tok = dense_model(p.model)
    win = make_windows(tok, p.eval_data, p.seqlen, p.eval_windows).ids

    def measure(m):
        scores = zeroshot.evaluate(m, tok, list(p.zeroshot_tasks), p.zeroshot_limit, progress=False)
        return {"ppl": perplexity(m, win, progress=False), "zeroshot_mean": scores["zeroshot_mean"]}

    work = Path(work_dir)
    # a row does not depend on which other methods and settings the study runs
    row_protocol = {k: v for k, v in p.as_dict().items() if k not in ("methods", "settings")}

    def cached(path: Path, compute):
        """Each measured row is kept beside its checkpoint: a study interrupted (or split across processes
        by settings) reuses every row finished under the same protocol."""
        if path.exists():
            saved = json.loads(path.read_text())
            if saved["protocol"] == row_protocol:
                return saved["result"]
        result = compute()
        write_json(path, {"protocol": row_protocol, "result": result})
        return result

    def one_row(method: str, setting: str) -> dict:
        m = copy.deepcopy(base)
        rep = prune(m, method, calib=p.calib, nsamples=p.nsamples, seqlen=p.seqlen, seed=p.seed, tokenizer=tok,
                    progress=False, **setting_kwargs(setting))
        before, q_before = measure(m), sparsity_of(projection(m, 0, "q").weight)
        res = finetune(m, tok, work / f"{method}_{setting}", p.calib, p.steps, p.lora_r, p.lora_alpha,
                       seqlen=p.train_seqlen, seed=p.seed, progress=progress)
        return {"setting": setting, "method": method, "before": before, "after": measure(res["model"]),
                "q_sparsity": [q_before, sparsity_of(projection(res["model"], 0, "q").weight)],
                "prune_seconds": rep.prune_seconds, "train_seconds": res["log"]["train_seconds"],
                "losses": res["log"]["losses"]}

    out = {"dense": cached(work / "dense.json", lambda: measure(base)), "rows": []}
    for setting in p.settings:
        for method in p.methods:
            row = cached(work / f"{method}_{setting}" / "row.json",
                         lambda method=method, setting=setting: one_row(method, setting))
            out["rows"].append(row)
            if progress:
                print(f"{setting:4s} {method:10s} ppl {row['before']['ppl']:9.2f} -> {row['after']['ppl']:9.2f}   "
                      f"zero-shot {row['before']['zeroshot_mean']:.3f} -> {row['after']['zeroshot_mean']:.3f}",
                      flush=True)
    return out


def recovery_markdown(study: dict, protocol: dict) -> str:
    p = protocol
    d = study["dense"]
    lines = [f"# LoRA recovery (model `{p['model']}`)", "",
             f"Pruned with calibration `{p['calib']}` {p['nsamples']} × {p['seqlen']}, seed {p['seed']}; LoRA r = "
             f"{p['lora_r']}, α = {p['lora_alpha']} on q/v, {p['steps']} steps of 4 × {p['train_seqlen']} tokens of "
             f"`{p['calib']}` calibration text, merged only where the pruned weight is non-zero. Perplexity on "
             f"`{p['eval_data']}` test ({p['eval_windows']} × {p['seqlen']}); zero-shot = mean over "
             f"{', '.join(p['zeroshot_tasks'])} of acc_norm where the task has it, else acc ({p['zeroshot_limit']} examples "
             f"each, our batched scorer; at n = {p['zeroshot_limit']} one task's standard error is about ±0.05). "
             "'ppl recovered' = share of the gap to dense that LoRA closed. "
             f"Dense: ppl {d['ppl']:.2f}, zero-shot {d['zeroshot_mean']:.3f}. Generated by `studies/lora.py`.", "",
             "| setting | method | ppl pruned | ppl + LoRA | ppl recovered | zero-shot pruned | zero-shot + LoRA | "
             "q sparsity before / after | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in study["rows"]:
        b, a = r["before"], r["after"]
        lines.append(f"| {r['setting']} | {r['method']} | {b['ppl']:.2f} | {a['ppl']:.2f} | "
                     f"{(b['ppl'] - a['ppl']) / (b['ppl'] - d['ppl']):.0%} | {b['zeroshot_mean']:.3f} | "
                     f"{a['zeroshot_mean']:.3f} | {r['q_sparsity'][0]:.4f} / {r['q_sparsity'][1]:.4f} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default=str(ROOT / "runs" / "lora"), help="checkpoints and finished rows (resumable)")
    ap.add_argument("--settings", default=None,
                    help="only these settings (comma list), e.g. one per process; the results are written "
                         "only by a run over all settings, which reuses the finished rows")
    a = ap.parse_args()
    p = replace(PROTOCOL, settings=tuple(a.settings.split(","))) if a.settings else PROTOCOL
    study = recovery_study(a.work, p)
    if a.settings:
        sys.exit(0)
    write_json(ROOT / "results" / "lora.json", {"protocol": p.as_dict(), **study, "versions": versions()})
    write_text(ROOT / "results" / "lora.md", recovery_markdown(study, p.as_dict()))
    print((ROOT / "results" / "lora.md").read_text())
