"""Run notebooks headless with papermill (used by `make notebooks`, `make demo` and the tests).

Kernels get the inline matplotlib backend whatever the calling process uses (pytest sets Agg for itself), so
the executed notebooks hold their figures as image/png outputs. With `--record-runtimes` the measured
wall time of each notebook at its default parameters goes into notebooks/runtimes.json, which every
notebook's header reads (`runtime_note`): the runtime a reader sees is measured, never typed."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RUNTIMES = NOTEBOOKS / "runtimes.json"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


@contextlib.contextmanager
def kernel_environment():
    """MPLBACKEND = the inline backend while kernels start (they inherit this process's environment)."""
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved


def execute(name: str, out_dir: str | Path, parameters: dict | None = None, kernel: str = "python3",
            timeout: int | None = None) -> dict:
    """Execute notebooks/<name>.ipynb into out_dir; return the JSON record the notebook wrote."""
    import papermill as pm
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"out_dir": str(out_dir), **(parameters or {})}
    t0 = time.perf_counter()
    with kernel_environment():
        pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"), parameters=params,
                            kernel_name=kernel, cwd=str(NOTEBOOKS), progress_bar=False, execution_timeout=timeout)
    record = json.loads((out_dir / f"{name}.json").read_text())
    record["executed_seconds"] = time.perf_counter() - t0
    return record


def runtimes(path: str | Path = RUNTIMES) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def record_runtime(name: str, seconds: float, path: str | Path = RUNTIMES) -> None:
    """Merge one notebook's measured time at its defaults into the runtimes file (kept sorted)."""
    from .record import write_json
    table = runtimes(path)
    table[name] = {"seconds": round(seconds, 1), "recorded": date.today().isoformat(),
                   "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
    write_json(path, dict(sorted(table.items())))


def runtime_text(name: str, path: str | Path = RUNTIMES) -> str:
    """One line for a notebook's header: its measured runtime at the default parameters, or 'not measured yet'."""
    entry = runtimes(path).get(name)
    how = "`python -m d2p_helpers.notebooks_run --record-runtimes`"
    if entry is None:
        return f"**Runtime at the default parameters:** not measured yet ({how} records it)."
    secs = entry["seconds"]
    shown = f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.1f} min"
    return (f"**Runtime at the default parameters:** {shown}, measured on {entry['recorded']} "
            f"({entry['machine']}) by {how}.")


def runtime_note(name: str, path: str | Path = RUNTIMES) -> None:
    """Show `runtime_text` as Markdown in a notebook (printed elsewhere)."""
    text = runtime_text(name, path)
    try:
        from IPython.display import Markdown, display
        display(Markdown(text))
    except ImportError:
        print(text)


def _value(text: str):
    """papermill-like coercion: JSON literals (numbers, true/false/null, lists) else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run notebooks with papermill")
    ap.add_argument("names", nargs="*", help="notebook names (default: all, in order)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "notebooks"))
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="parameter override")
    ap.add_argument("--record-runtimes", action="store_true",
                    help=f"write each notebook's wall time into {RUNTIMES.relative_to(ROOT)} (default parameters only)")
    a = ap.parse_args(argv)
    if a.record_runtimes and a.p:
        ap.error("--record-runtimes measures the default parameters; drop the -p overrides")
    names = a.names or sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    params = {k: _value(v) for k, v in a.p}
    for name in names:
        rec = execute(name, a.out, params)
        if a.record_runtimes:
            record_runtime(name, rec["executed_seconds"])
        scalars = {k: v for k, v in rec["metrics"].items() if isinstance(v, (int, float, str)) and len(str(v)) < 60}
        print(f"[notebooks] {name}: {rec['executed_seconds']:.1f}s -> {a.out}/{name}.json")
        if scalars:
            print("             " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in scalars.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
