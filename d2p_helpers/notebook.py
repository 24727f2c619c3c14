"""Small helpers the notebooks and studies share: a dense model loaded once, model choice with a visible
fallback, and the closing record."""
from __future__ import annotations

import time
from pathlib import Path

from .record import set_threads, versions, write_json

_T0 = time.perf_counter()
# Every notebook imports this module: its kernel gets an explicit thread count (D2P_THREADS, else half the
# cores). torch's default, every core, ran the OBS column loop of notebook 03 several times slower on a busy
# 2-core machine.
THREADS = set_threads()
_MODELS: dict = {}


def dense_model(name: str):
    """(model, tokenizer), loaded once per process; callers deep-copy the model before pruning it."""
    if name not in _MODELS:
        from .models import load_model
        _MODELS[name] = load_model(name)
    return _MODELS[name]


def resolve_model(model: str, preferred: str = "facebook/opt-125m", fallback: str = "smollm2-135m") -> tuple[str, str]:
    """`auto` -> the paper's model where it loads, else the embedded one; returns (name, why). Never silent."""
    if model != "auto":
        return model, "chosen by parameter"
    from .models import ModelError
    try:
        dense_model(preferred)          # loaded once per process; the notebook reuses it
        return preferred, f"auto: {preferred} loaded"
    except ModelError as exc:
        why = f"auto: {preferred} could not be loaded here ({exc}); using the embedded {fallback} instead"
        print(f"[d2p] {why}")
        return fallback, why


def finish(out_dir: str | Path, notebook: str, parameters: dict, metrics: dict, figures: list | None = None) -> Path:
    """Write `out_dir/<notebook>.json`: parameters, versions, metrics, figure paths, wall time."""
    record = {"notebook": notebook, "parameters": parameters, "metrics": metrics,
              "figures": [str(f) for f in (figures or [])], "versions": versions(),
              "seconds": time.perf_counter() - _T0}
    path = write_json(Path(out_dir) / f"{notebook}.json", record)
    print(f"[d2p] wrote {path}")
    return path


def caption(records: list | None = None, **protocol) -> str:
    """Protocol line printed under a figure: model, data, N x L, seed, versions. With `records` (the result
    records the figure draws), the versions are the ones those runs were measured with, not this kernel's."""
    items = [f"{k}={v_}" for k, v_ in protocol.items()]
    if records:
        seen = {(r["versions"].get("torch"), r["versions"].get("transformers")) for r in records if r.get("versions")}
        items.append("measured with " + ", ".join(f"torch {t}, transformers {tr}" for t, tr in sorted(seen)))
    else:
        v = versions()
        items.append(f"torch {v.get('torch')}, transformers {v.get('transformers')}")
    return "; ".join(items)


def answers(items: list[str]) -> None:
    """The Discussion's answers as one collapsed block (HTML <details>: JupyterLab and GitHub render it closed),
    so a group can think first; items are Markdown, with numbers computed by the calling notebook."""
    from IPython.display import Markdown, display
    body = "\n".join(f"{i}. {text}" for i, text in enumerate(items, 1))
    display(Markdown(f"<details><summary><b>Answers</b> (click to open)</summary>\n\n{body}\n\n</details>"))
