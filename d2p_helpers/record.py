"""Result records: protocol, versions and atomic JSON writes beside every number."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path


def default_threads() -> int:
    """D2P_THREADS, else half the cores: two threads on a busy 2-core machine can run ten times slower than one."""
    env = os.environ.get("D2P_THREADS")
    return int(env) if env else max(1, (os.cpu_count() or 2) // 2)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads explicitly (timings and tests depend on it); returns the count."""
    import torch
    n = n or default_threads()
    torch.set_num_threads(n)
    return n


def versions() -> dict:
    import importlib.metadata as md
    import torch
    out = {"python": platform.python_version(), "torch_threads": torch.get_num_threads()}
    for pkg in ("torch", "torchvision", "timm", "transformers", "accelerate", "lm-eval", "datasets", "numpy",
                "d2p-helpers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@contextlib.contextmanager
def replace_file(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def replace_dir(path: str | os.PathLike):
    """Yield an empty temporary folder beside `path`; on success it replaces `path` whole, on failure goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    with replace_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, record: dict) -> Path:
    """A JSON record, serialised first (a failure leaves nothing behind), written atomically."""
    return write_text(path, json.dumps(record, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    try:
        import numpy as np
        import torch
        if isinstance(obj, torch.Tensor):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Record keys renamed in place (old name -> new name): a linear's rows are `per_linear`, the q/k/v choice
# is one per block, attention statistics are per block. Old cache entries and result files still read.
RENAMED_KEYS = {"per_layer": "per_linear", "frozen_per_layer": "frozen_per_block",
                "attention_per_layer": "attention_per_block"}


def upgrade_record(rec):
    """A record (or any JSON value) written before the renames, spelled with today's keys."""
    if isinstance(rec, list):
        return [upgrade_record(r) for r in rec]
    if not isinstance(rec, dict):
        return rec
    out = {}
    for k, v in rec.items():
        if k == "attention" and isinstance(v, dict) and "per_layer" in v:   # attention rows are per block
            v = {("per_block" if kk == "per_layer" else kk): vv for kk, vv in v.items()}
            v["per_block"] = [{("block" if kk == "layer" else kk): vv for kk, vv in r.items()}
                              for r in v["per_block"]]
        elif k == "attention_per_layer":
            v = [{("block" if kk == "layer" else kk): vv for kk, vv in r.items()} for r in v]
        out[RENAMED_KEYS.get(k, k)] = upgrade_record(v)
    return out


def read_json(path: str | os.PathLike):
    """A result file or cache entry, with today's key names (see `upgrade_record`)."""
    return upgrade_record(json.loads(Path(path).read_text()))
