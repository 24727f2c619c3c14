"""Checks made before any model or text is loaded: paths, device, text files, model sources.

Each check raises `InputError` with one line that says what was expected. They are cheap (no model, no
tokenizer, no whole file in memory), so the CLI, `prune()` and the studies call them first and a bad
request fails in a second instead of after a 15-minute run. Token counts are bounded by byte counts:
a byte-level BPE token spans at least one byte, so a file of B bytes holds at most B tokens."""
from __future__ import annotations

import codecs
import os
from pathlib import Path


class InputError(ValueError):
    """A request that cannot work, found before any work was done."""


# ---------------------------------------------------------------- output paths
def _writable_parent(path: Path, flag: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"{flag} {path}: folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: folder {parent} is not writable")


def output_file(path: str | os.PathLike, flag: str = "--out") -> None:
    """A file we will write at the end: not a folder, in a folder that exists and is writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file name (e.g. {path}/record.json)")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path} exists and is not writable")
    _writable_parent(path, flag)


SAVE_MARKERS = ("config.json", "d2p_prune.json", "d2p_timm.json", "d2p_compressed.json")


def output_folder(path: str | os.PathLike, flag: str = "--save") -> None:
    """A folder we will replace whole at the end: absent, empty, or a model folder saved before (never a
    folder of other files, which replacing would delete)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file; give a folder name (it is created, or replaced if it holds "
                         "a saved model)")
    if path.is_dir() and any(path.iterdir()) and not any((path / m).exists() for m in SAVE_MARKERS):
        raise InputError(f"{flag} {path} is a folder of other files; give a new or empty folder")
    _writable_parent(path, flag)


# ---------------------------------------------------------------- device
def device(name: str | None) -> None:
    """cpu, cuda[:N] or mps, present on this machine."""
    if name is None or name == "cpu":
        return
    import torch
    kind, _, index = name.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name}: no CUDA GPU is visible here (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda or 'none'}); use --device cpu")
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise InputError(f"device {name}: expected cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif kind == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"device {name}: MPS (Apple GPU) is not available here; use --device cpu")
    else:
        raise InputError(f"unknown device '{name}': expected cpu, cuda, cuda:N or mps")


# ---------------------------------------------------------------- texts
def _encoding_hint(head: bytes) -> str:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "it looks like UTF-16; convert it with `iconv -f UTF-16 -t UTF-8`"
    return "convert it to UTF-8 first, e.g. `iconv -f latin1 -t UTF-8` if it is Latin-1"


def text_file(path: str | os.PathLike, role: str) -> int:
    """A readable UTF-8 text file (decoded in 1 MiB chunks, never whole); returns its size in bytes."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{role} text file not found: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"{role} text file is not readable: {path}")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise InputError(f"{role} text file {path} is not UTF-8 (byte {offset + exc.start}); "
                                 f"{_encoding_hint(head)}") from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{role} text file {path} ends inside a UTF-8 character; {_encoding_hint(head)}") from None
    return offset


def text(spec: str, role: str, min_tokens: int) -> None:
    """A text name or file that can give at least `min_tokens` tokens (`role`: calibration, evaluation);
    calibration also takes `self` (the model writes it) and mixtures such as `news+self`."""
    from .data import SELF, DataError, HUB_TEXTS, calib_parts, parse_name
    if role == "calibration":
        try:
            parts = calib_parts(spec)
        except DataError as exc:
            raise InputError(str(exc)) from None
        if len(parts) > 1 or parts == [SELF]:
            for part in parts:
                if part != SELF:
                    text(part, role, min_tokens)
            return
    try:
        name, split = parse_name(spec, "calib" if role == "calibration" else "test")
    except DataError as exc:
        raise InputError(str(exc)) from None
    if split == "file":
        size = text_file(name, role)
        if size < min_tokens:
            raise InputError(f"{role} text {name} has {size} bytes, so at most {size} tokens; "
                             f"need {min_tokens} (lower the window length or the count)")
    elif name in HUB_TEXTS and (os.environ.get("HF_HUB_OFFLINE") == "1"
                                or os.environ.get("HF_DATASETS_OFFLINE") == "1"):
        raise InputError(f"'{name}' needs the Hugging Face hub, which is switched off here (HF_HUB_OFFLINE=1); "
                         "use the embedded texts: wiki, news, or a .txt file")


# ---------------------------------------------------------------- models
def model_source(name: str) -> None:
    """A model name we know, a .gguf file, a folder transformers can read, or a hub id in the local cache."""
    from .models import EMBEDDED_MODELS, TINY_MODELS, TINY_TIMM, TINY_VISION
    known = EMBEDDED_MODELS + TINY_MODELS + TINY_TIMM + TINY_VISION + ("vit-s14-focus", "timm:vit-s14-focus",
                                                                       "vit-s14-focus-hf")
    if name in known or name.startswith("timm:"):
        return
    path = Path(name)
    if name.endswith(".gguf"):
        if not path.is_file():
            raise InputError(f"GGUF file not found: {name}")
        return
    if path.is_dir():
        from .models import TIMM_SAVE_JSON
        if (path / TIMM_SAVE_JSON).exists():
            return
        _model_config(name, local_only=True, where=f"folder {name}")
        return
    if path.exists():
        raise InputError(f"--model {name} is a file; expected a model folder, a .gguf file or a model name")
    from .models import _hub_reachable, offline_choices
    try:                                             # a hub id in the local cache needs no network
        _model_config(name, local_only=True, where=f"model '{name}'")
        return
    except InputError:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        why = "the hub is switched off (HF_HUB_OFFLINE=1)"
    elif not _hub_reachable():
        why = "the hub cannot be reached from here"
    else:
        return                                       # a hub id: transformers downloads it
    raise InputError(f"unknown model '{name}': not a folder, not in the local cache, and {why}; "
                     f"offline choices: {offline_choices()}")


def _model_config(name: str, local_only: bool, where: str) -> None:
    """transformers can read the folder's config and knows its model type (no weights are read)."""
    try:
        from transformers import AutoConfig
        AutoConfig.from_pretrained(name, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, OSError) and not (Path(name) / "config.json").exists() and Path(name).is_dir():
            why = "no config.json"
        raise InputError(f"{where} is not a model transformers can read: {why[:200]}") from None
