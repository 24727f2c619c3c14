"""Text for calibration and perplexity, by name or path.

Names: `wiki` and `news` (real text from the gensim wheel, split by article into
calib / val / test), `wikitext2` and `c4` (the paper's data, through `datasets`, only
where the hub is reachable), or a path to a `.txt` file.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .assets import AssetError, cache_dir, prepare_texts

EMBEDDED_TEXTS = ("wiki", "news")
HUB_TEXTS = ("wikitext2", "c4")
SPLITS = ("calib", "val", "test")


class DataError(ValueError):
    """Bad text name, path or window request; the message says what was expected."""


def parse_name(spec: str, default_split: str) -> tuple[str, str]:
    """`wiki` -> (wiki, default); `news:val` -> (news, val); paths pass through."""
    if spec.endswith(".txt"):
        return spec, "file"
    name, _, split = spec.partition(":")
    split = split or default_split
    if name not in EMBEDDED_TEXTS + HUB_TEXTS:
        raise DataError(f"unknown text '{spec}': expected one of {', '.join(EMBEDDED_TEXTS + HUB_TEXTS)} "
                        f"(optionally ':calib|val|test') or a path to a .txt file")
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' in '{spec}': expected one of {', '.join(SPLITS)}")
    return name, split


def load_articles(name: str, split: str) -> list[str]:
    """The articles of one split of an embedded text."""
    path = prepare_texts()[name]
    return [a["text"] for a in json.loads(path.read_text(encoding="utf-8"))["splits"][split]]


def _hub_text(name: str, split: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DataError(f"'{name}' needs the Hugging Face hub, which is switched off here (HF_HUB_OFFLINE=1); "
                        f"use the embedded texts: {', '.join(EMBEDDED_TEXTS)}")
    try:
        from datasets import load_dataset
        if name == "wikitext2":
            hf_split = {"calib": "train", "val": "validation", "test": "test"}[split]
            return "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split=hf_split)["text"])
        if split == "calib":
            ds = load_dataset("allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train")
        else:
            ds = load_dataset("allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
                              split="validation")
        return "\n\n".join(ds["text"][:20000])
    except Exception as exc:  # network errors come in many types
        raise DataError(f"could not load '{name}' from the hub ({type(exc).__name__}); "
                        f"use the embedded texts: {', '.join(EMBEDDED_TEXTS)}") from None


def load_text(spec: str, default_split: str = "test") -> str:
    """Whole text of a split, articles joined by blank lines (the WikiText protocol's join)."""
    name, split = parse_name(spec, default_split)
    if split == "file":
        path = Path(name)
        if not path.is_file():
            raise DataError(f"text file not found: {name}")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"text file {name} is not UTF-8 (byte {exc.start}); convert it first, "
                            "e.g. `iconv -f latin1 -t UTF-8`") from None
    if name in HUB_TEXTS:
        return _hub_text(name, split)
    try:
        return "\n\n".join(load_articles(name, split))
    except AssetError as exc:
        raise DataError(str(exc)) from None


@dataclass
class TokenWindows:
    """Windows of token ids, [n, seqlen], and where they came from (goes into records)."""
    ids: torch.Tensor
    source: str
    total_tokens: int
    notes: dict = field(default_factory=dict)     # how generated parts were made (self_windows)

    def describe(self) -> dict:
        return {"source": self.source, "windows": int(self.ids.shape[0]), "seqlen": int(self.ids.shape[1]),
                "total_tokens": self.total_tokens}


_TOKEN_IDS: dict = {}      # (tokenizer fingerprint, text hash) -> ids; texts are read many times per process


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """The text's token ids, computed once per tokenizer and text in this process (wiki test takes ~1 s).

    Keyed by the tokenizer's class, path and vocabulary size and by the text's hash, never by `id()`."""
    key = (type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer),
           hashlib.sha1(text.encode()).hexdigest())
    if key not in _TOKEN_IDS:
        if len(_TOKEN_IDS) >= 16:
            _TOKEN_IDS.pop(next(iter(_TOKEN_IDS)))
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        _TOKEN_IDS[key] = ids
    return _TOKEN_IDS[key].clone()


def eval_windows(tokenizer, spec: str, seqlen: int, max_windows: int | None = None) -> TokenWindows:
    """Non-overlapping windows of the joined test text (paper protocol), the first `max_windows`."""
    ids = tokenize(tokenizer, load_text(spec, "test"))
    n = ids.numel() // seqlen
    if n == 0:
        raise DataError(f"'{spec}' has {ids.numel()} tokens, fewer than one window of {seqlen}")
    if max_windows:
        n = min(n, max_windows)
    return TokenWindows(ids[: n * seqlen].view(n, seqlen), spec, int(ids.numel()))


def random_windows(ids: torch.Tensor, n: int, seqlen: int, seed: int) -> torch.Tensor:
    """`n` seeded random windows of `seqlen` tokens from one token stream, [n, seqlen]."""
    rng = random.Random(seed)
    return torch.stack([ids[s:s + seqlen] for s in (rng.randint(0, ids.numel() - seqlen - 1) for _ in range(n))])


def calibration_windows(tokenizer, spec: str, nsamples: int, seqlen: int, seed: int) -> TokenWindows:
    """`nsamples` random windows of `seqlen` tokens from the calibration split.

    The paper draws one window from each of N random C4 documents longer than L. Our
    articles are shorter than L, so we join the split and draw N random windows from
    the stream (seeded, so the same seed gives the same windows)."""
    if nsamples < 1 or seqlen < 2:
        raise DataError(f"need nsamples >= 1 and seqlen >= 2, got {nsamples} and {seqlen}")
    ids = tokenize(tokenizer, load_text(spec, "calib"))
    if ids.numel() <= seqlen:
        raise DataError(f"calibration text '{spec}' has {ids.numel()} tokens, need more than seqlen={seqlen}")
    return TokenWindows(random_windows(ids, nsamples, seqlen, seed), spec, int(ids.numel()))


# ---------------------------------------------------------------- self-generated and mixed calibration text
SELF = "self"
SELF_SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "prompt": "the BOS token alone",
                 "batch": 8}


def calib_parts(spec: str) -> list[str]:
    """`news+self` -> ['news', 'self']: a calibration mixture, drawn uniformly by windows."""
    parts = [p for p in spec.split("+")]
    if any(not p for p in parts):
        raise DataError(f"calibration mixture '{spec}' has an empty part; expected e.g. news+self or news+wiki:calib")
    for p in parts:
        if p.startswith(SELF) and p != SELF:
            raise DataError(f"'{p}': self-generated text takes no options yet; use 'self' (one generated "
                            "sequence per window)")
        if p != SELF:
            parse_name(p, "calib")
    return parts


@torch.no_grad()
def generated_windows(model, tokenizer, n: int, seqlen: int, seed: int) -> TokenWindows:
    """Self-calibration (Williams, Chrysostomou & Aletras, NAACL 2025): `n` windows the dense model writes itself,
    each `seqlen` tokens sampled after the BOS token alone (SmolLM2-Instruct's BOS is `<|im_start|>`, so an
    instruct model starts a chat turn of its own choosing); EOS is held back until `seqlen` tokens are out.
    Sampling settings are SELF_SAMPLING, seeded: the same seed gives the same text on the same machine."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    out = []
    for start in range(0, n, SELF_SAMPLING["batch"]):
        k = min(SELF_SAMPLING["batch"], n - start)
        prompt = torch.full((k, 1), bos, dtype=torch.long, device=device)
        ids = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=seqlen,
                             min_new_tokens=seqlen, do_sample=True, temperature=SELF_SAMPLING["temperature"],
                             top_p=SELF_SAMPLING["top_p"], top_k=0, use_cache=True,
                             pad_token_id=tokenizer.eos_token_id)
        out.append(ids[:, 1:1 + seqlen].cpu())
    ids = torch.cat(out)
    return TokenWindows(ids, SELF, int(ids.numel()))


def model_fingerprint(model) -> str:
    """A short hash of the weights (each parameter's name, shape, sum, sum of squares and first values): the
    same model gives the same hash, a pruned or other model another. Cheap on any device, no full copy."""
    h = hashlib.sha1()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1).double()
            h.update(f"{name}{tuple(p.shape)}{float(flat.sum())}{float(flat.square().sum())}"
                     f"{flat[:16].cpu().tolist()}".encode())
    return h.hexdigest()[:16]


def self_text_dir() -> Path:
    """Where generated calibration text is kept: `<cache>/self_text/` (D2P_CACHE moves the cache)."""
    return cache_dir() / "self_text"


def self_windows(model, tokenizer, n: int, seqlen: int, seed: int) -> TokenWindows:
    """`generated_windows`, kept on disk: generating is the dense model's job, the same for every sparsity and
    method, so it runs once per (weights, count, length, seed, sampling settings, torch version) and later runs
    read the very same ids back. `notes` says which happened and what generating cost."""
    key_src = json.dumps({"model": model_fingerprint(model), "n": n, "seqlen": seqlen, "seed": seed,
                          "sampling": SELF_SAMPLING, "torch": torch.__version__}, sort_keys=True)
    key = hashlib.sha1(key_src.encode()).hexdigest()[:20]
    path = self_text_dir() / f"{key}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        return TokenWindows(saved["ids"], SELF, int(saved["ids"].numel()),
                            {"cache": "read", "key": key, "generate_seconds": float(saved["generate_seconds"])})
    ts = time.perf_counter()
    win = generated_windows(model, tokenizer, n, seqlen, seed)
    secs = time.perf_counter() - ts
    from .record import replace_file
    with replace_file(path) as tmp:         # atomic: two workers may write the same key
        torch.save({"ids": win.ids, "generate_seconds": secs, "key_source": key_src}, tmp)
    win.notes = {"cache": "written", "key": key, "generate_seconds": secs}
    return win


def mixed_calibration(tokenizer, spec: str, nsamples: int, seqlen: int, seed: int, model=None) -> TokenWindows:
    """Calibration windows from one text or a mixture (`news+self`): part i gives nsamples // k windows (the
    first nsamples % k parts one more), interleaved round-robin so every part spans the whole run."""
    parts = calib_parts(spec)
    counts = [nsamples // len(parts) + (i < nsamples % len(parts)) for i in range(len(parts))]
    drawn = []
    for i, (part, count) in enumerate(zip(parts, counts)):
        if count == 0:
            continue
        if part == SELF:
            if model is None:
                raise DataError("self-generated calibration needs the model (prune() passes it)")
            drawn.append(self_windows(model, tokenizer, count, seqlen, seed + 1000 * i))
        else:
            drawn.append(calibration_windows(tokenizer, part, count, seqlen, seed + 1000 * i))
    if len(drawn) == 1 and len(parts) == 1:
        return drawn[0]
    order = [w for j in range(max(counts)) for w in (d.ids[j] for d in drawn if j < d.ids.shape[0])]
    ids = torch.stack(order)
    notes = {k: v for d in drawn for k, v in d.notes.items()}
    return TokenWindows(ids, spec, sum(d.total_tokens for d in drawn), notes)


def windows_fingerprint(ids: torch.Tensor) -> str:
    """sha1 of the calibration token ids: two records with one hash calibrated on the very same windows."""
    return hashlib.sha1(ids.to(torch.int64).numpy().tobytes()).hexdigest()[:16]
