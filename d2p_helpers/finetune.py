"""LoRA recovery fine-tuning of a pruned model (peft), merged back without touching its zeros.

The LoRA update B A is dense; merged naively it would refill every pruned weight. We merge it only where
the base weight is non-zero, so the saved model keeps its exact sparsity and N:M pattern."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import load_text, random_windows, tokenize
from .record import replace_file, write_json


def training_windows(tokenizer, data: str, seqlen: int, count: int, seed: int) -> torch.Tensor:
    return random_windows(tokenize(tokenizer, load_text(data, "calib")), count, seqlen, seed)


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
    with warnings.catch_warnings():
        # peft 0.21.2 (the newest release) still reads transformers 5's deprecated `is_gradient_checkpointing`;
        # the FutureWarning is about peft's code, not ours, and only this one message is silenced
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
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
