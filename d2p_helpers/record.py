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
