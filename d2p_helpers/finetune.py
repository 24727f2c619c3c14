"""LoRA recovery fine-tuning of a pruned model (peft), merged back without touching its zeros.

The LoRA update B A is dense; merged naively it would refill every pruned weight. We merge it only where
the base weight is non-zero, so the saved model keeps its exact sparsity and N:M pattern."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import tokenize, load_text
from .record import replace_file, write_json


def training_windows(tokenizer, data: str, seqlen: int, count: int, seed: int) -> torch.Tensor:
    ids = tokenize(tokenizer, load_text(data, "calib"))
    rng = random.Random(seed)
    return torch.stack([ids[s:s + seqlen] for s in (rng.randint(0, ids.numel() - seqlen - 1) for _ in range(count))])


def sparsity_masks(model, targets: list[str]) -> dict[str, torch.Tensor]:
    return {n: (m.weight != 0) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets}


def finetune(model, tokenizer, out_dir: str | Path, data: str = "news", steps: int = 200, lora_r: int = 8,
             lora_alpha: int = 16, lora_dropout: float = 0.05, targets: tuple[str, ...] = ("q_proj", "v_proj"),
             lr: float = 2e-4, seqlen: int = 128, batch_size: int = 4, seed: int = 0, save_every: int = 50,
             progress: bool = True) -> dict:
    """Train LoRA adapters for `steps` steps (resuming from out_dir/checkpoint), merge them sparsely, return a log."""
    from peft import LoraConfig, get_peft_model
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint"
    masks = sparsity_masks(model, list(targets))
    if not masks:
        raise ValueError(f"no linear named {', '.join(targets)} in the model")
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                  target_modules=list(targets), bias="none"))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    windows = training_windows(tokenizer, data, seqlen, steps * batch_size, seed)
    log, spent = {"losses": [], "resumed_from": 0}, 0.0     # spent: training seconds of earlier calls
    # what must match to resume; more steps than last time is allowed (training continues)
    config = {"lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
              "targets": list(targets), "lr": lr, "seqlen": seqlen, "batch_size": batch_size, "data": data, "seed": seed}
    if (ckpt / "state.pt").exists():
        state = torch.load(ckpt / "state.pt", weights_only=False)
        if state.get("config", config) != config:
            differ = ", ".join(f"{k} {state['config'].get(k)} -> {v}" for k, v in config.items()
                               if state["config"].get(k) != v)
            raise ValueError(f"the checkpoint in {ckpt} was trained with other settings ({differ}); "
                             "use another output folder or delete it")
        for p, v in zip(params, state["params"]):
            p.data.copy_(v)
        opt.load_state_dict(state["optimizer"])
        log, spent = {"losses": state["losses"], "resumed_from": state["step"]}, state.get("seconds", 0.0)
    start = len(log["losses"])
    peft_model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, steps), desc="lora", disable=not progress, initial=start, total=steps)
    for step in bar:
        batch = windows[step * batch_size:(step + 1) * batch_size]
        loss = peft_model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        log["losses"].append(loss.item())
        bar.set_postfix(loss=f"{log['losses'][-1]:.3f}")
        if (step + 1) % save_every == 0 or step + 1 == steps:
            ckpt.mkdir(parents=True, exist_ok=True)
            with replace_file(ckpt / "state.pt") as tmp:
                torch.save({"params": [p.detach().clone() for p in params], "optimizer": opt.state_dict(),
                            "losses": log["losses"], "step": step + 1, "config": config,
                            "seconds": spent + time.perf_counter() - t0}, tmp)
    peft_model.eval()
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        for name, mask in masks.items():
            merged.get_submodule(name).weight.mul_(mask)   # keep the pruned weights exactly zero
    log.update({"steps": steps, "lora_r": lora_r, "lora_alpha": lora_alpha, "targets": list(targets), "lr": lr,
                "seqlen": seqlen, "batch_size": batch_size, "data": data, "seed": seed,
                "train_seconds": spent + time.perf_counter() - t0})
    return {"model": merged, "log": log}


def save_finetuned(model, tokenizer, out_dir: str | Path, log: dict) -> Path:
    from .prune.engine import save_pruned
    out = Path(out_dir) / "model"
    save_pruned(model, tokenizer, out)
    write_json(Path(out_dir) / "finetune.json", log)
    return out


def recovery_study(work_dir: str | Path, *, model: str, methods: list[str], settings: list[str],
                   calib: str = "news", nsamples: int = 16, seqlen: int = 512, seed: int = 0, steps: int = 100,
                   train_seqlen: int = 128, lora_r: int = 8, lora_alpha: int = 16, eval_data: str = "wiki",
                   eval_windows: int = 8, zeroshot_tasks: tuple = ("hellaswag", "piqa", "arc_easy"),
                   zeroshot_limit: int = 100, progress: bool = True) -> dict:
    """The paper's Table 4 question on one model: prune with each method, measure, LoRA-tune on the
    calibration text, measure again. Returns {"dense": ..., "rows": [...]} with perplexity, zero-shot
    mean, the training losses and each q projection's sparsity before and after (they must agree).
    The keywords are the protocol that studies/lora.py records, so a caller passes its protocol dict."""
    import copy
    from . import zeroshot
    from .data import eval_windows as make_windows
    from .evaluate import perplexity
    from .experiments import dense_model
    from .masks import sparsity_of
    from .models import projection
    from .prune import prune, setting_kwargs
    base, tok = dense_model(model)
    win = make_windows(tok, eval_data, seqlen, eval_windows).ids

    def measure(m):
        scores = zeroshot.evaluate(m, tok, list(zeroshot_tasks), zeroshot_limit, progress=False)
        return {"ppl": perplexity(m, win, progress=False), "zeroshot_mean": scores["zeroshot_mean"]}

    work = Path(work_dir)
    protocol = {"model": model, "calib": calib, "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
                "steps": steps, "train_seqlen": train_seqlen, "lora_r": lora_r, "lora_alpha": lora_alpha,
                "eval_data": eval_data, "eval_windows": eval_windows, "zeroshot_tasks": list(zeroshot_tasks),
                "zeroshot_limit": zeroshot_limit}

    def cached(path: Path, compute):
        """Each measured row is kept beside its checkpoint: a study interrupted (or split across processes
        by settings) reuses every row finished under the same protocol."""
        if path.exists():
            saved = json.loads(path.read_text())
            if saved["protocol"] == protocol:
                return saved["result"]
        result = compute()
        write_json(path, {"protocol": protocol, "result": result})
        return result

    def one_row(method: str, setting: str) -> dict:
        m = copy.deepcopy(base)
        rep = prune(m, method, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed, tokenizer=tok,
                    progress=False, **setting_kwargs(setting))
        before, q_before = measure(m), sparsity_of(projection(m, 0, "q").weight)
        res = finetune(m, tok, work / f"{method}_{setting}", calib, steps, lora_r, lora_alpha,
                       seqlen=train_seqlen, seed=seed, progress=progress)
        return {"setting": setting, "method": method, "before": before, "after": measure(res["model"]),
                "q_sparsity": [q_before, sparsity_of(projection(res["model"], 0, "q").weight)],
                "prune_seconds": rep.prune_seconds, "train_seconds": res["log"]["train_seconds"],
                "losses": res["log"]["losses"]}

    out = {"dense": cached(work / "dense.json", lambda: measure(base)), "rows": []}
    for setting in settings:
        for method in methods:
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
