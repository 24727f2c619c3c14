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
from dataclasses import dataclass
from pathlib import Path

import torch

from .assets import AssetError, prepare_texts

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
