"""Run notebooks headless with papermill (used by `make notebooks`, `make demo` and the tests).

Kernels get the inline matplotlib backend whatever the calling process uses (pytest sets Agg for itself), so
the executed notebooks hold their figures as image/png outputs. With `--record-runtimes` the measured
wall time of each notebook at its default parameters goes into notebooks/runtimes.json, which every
notebook's header reads (`runtime_note`): the runtime a reader sees is measured, never typed."""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import sys
import tempfile
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


def _ipc_kernel_manager(folder: str):
    """A kernel manager on local sockets in `folder`: no network port, and no kernel warning about
    unencrypted TCP on the caller's stderr."""
    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kw):
            super().__init__(**{**kw, "transport": "ipc", "ip": os.path.join(folder, "kernel")})
    return IPCKernelManager


class NotebookInputError(ValueError):
    """The caller's mistake (unknown notebook, unknown or ill-typed parameter), found before a kernel starts."""


class NotebookFailed(RuntimeError):
    """A cell raised: one line naming the notebook, the cell and the error, and where the full traceback is."""


def notebook_names() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))


def notebook_path(name: str) -> Path:
    path = NOTEBOOKS / f"{Path(name).stem}.ipynb"
    if not path.is_file():
        raise NotebookInputError(f"unknown notebook '{name}': expected one of {', '.join(notebook_names())}")
    return path


# papermill's inferred type of a parameter's default -> the Python types a value may have
_ACCEPTS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list, tuple),
            "dict": (dict,)}


@functools.lru_cache(maxsize=None)
def declared_parameters(name: str) -> dict:
    """papermill's reading of the notebook's `parameters` cell (names, inferred types, defaults), read once."""
    import papermill as pm
    return pm.inspect_notebook(str(notebook_path(name)))


def check_parameters(name: str, parameters: dict) -> dict:
    """The overrides checked against the notebook's `parameters` cell (names and types) before any kernel."""
    declared = declared_parameters(name)
    out = {}
    for key, value in parameters.items():
        if key not in declared:
            raise NotebookInputError(f"{name} has no parameter '{key}'; its parameters: {', '.join(declared)}")
        kind = declared[key]["inferred_type_name"]
        ok = _ACCEPTS.get(kind)
        if ok is not None and (not isinstance(value, ok) or (kind != "bool" and isinstance(value, bool))):
            raise NotebookInputError(f"{name}: parameter '{key}' expects {kind} (default "
                                     f"{declared[key]['default']}), got {type(value).__name__} {value!r}")
        out[key] = value
    return out


def execute(name: str, out_dir: str | Path, parameters: dict | None = None, kernel: str = "python3",
            timeout: int | None = None) -> dict:
    """Execute notebooks/<name>.ipynb into out_dir; return the JSON record the notebook wrote.

    Raises NotebookInputError before any kernel starts, NotebookFailed when a cell raises."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    params = {"out_dir": str(Path(out_dir).resolve()), **check_parameters(name, parameters or {})}
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotebookInputError(f"--out {out_dir} is a file; expected a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path, executed = out_dir / f"{name}.json", out_dir / f"{name}.ipynb"
    record_path.unlink(missing_ok=True)      # a record left by an earlier run must not pass for this one
    t0 = time.perf_counter()
    try:
        with kernel_environment(), tempfile.TemporaryDirectory(prefix="d2p-kernel-") as sockets:
            pm.execute_notebook(str(notebook_path(name)), str(executed), parameters=params, kernel_name=kernel,
                                cwd=str(NOTEBOOKS), progress_bar=False, execution_timeout=timeout,
                                kernel_manager_class=_ipc_kernel_manager(sockets))
    except PapermillExecutionError as exc:
        evalue = (exc.evalue or "").strip().splitlines()[0][:300] if (exc.evalue or "").strip() else ""
        raise NotebookFailed(f"{name}: cell {exc.exec_count} failed: {exc.ename}: {evalue} "
                             f"(full traceback in {executed})") from None
    if not record_path.exists():
        raise NotebookFailed(f"{name}: ran to the end but wrote no record {record_path.name} ({executed})")
    record = json.loads(record_path.read_text())
    record["executed_seconds"] = time.perf_counter() - t0
    return record


# What a reader must not meet in an executed notebook: a warning of any kind (Python's, tqdm's text fallback,
# a library's logger) or a traceback printed by a cell that went on.
WARNING_TEXT = re.compile(r"\b\w*Warning\b|\bwarning:|\bWARNING\b|Traceback \(most recent call last\)")


def warning_lines(executed: str | Path) -> list[str]:
    """The output lines of an executed notebook that carry warning text (see WARNING_TEXT), 'cell N: line'."""
    import nbformat
    nb = nbformat.read(str(executed), as_version=4)
    out = []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                text = "\n".join(o.get("traceback", []))
            else:
                text = o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
            out += [f"cell {i}: {line.strip()[:200]}" for line in text.splitlines() if WARNING_TEXT.search(line)]
    return out


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


def _as_declared(name: str, params: dict) -> dict:
    """A command-line value stays the text it was typed as where the notebook expects a string (`-p calib 42`)."""
    declared = declared_parameters(name)
    return {k: json.dumps(v) if declared.get(k, {}).get("inferred_type_name") == "str" and not isinstance(v, str)
            else v for k, v in params.items()}


class _Parser(argparse.ArgumentParser):
    def error(self, message):      # one line, exit 2, no usage dump
        print(f"notebooks_run: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> int:
    ap = _Parser(description="Run notebooks with papermill")
    ap.add_argument("names", nargs="*", help="notebook names (default: all, in order)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "notebooks"))
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="parameter override")
    ap.add_argument("--record-runtimes", action="store_true",
                    help=f"write each notebook's wall time into {RUNTIMES.relative_to(ROOT)} (default parameters only)")
    a = ap.parse_args(argv)
    if a.record_runtimes and a.p:
        ap.error("--record-runtimes measures the default parameters; drop the -p overrides")
    names = a.names or notebook_names()
    try:
        params = {k: _value(v) for k, v in a.p}
        for name in names:                  # every notebook and parameter checked before the first kernel
            check_parameters(name, _as_declared(name, params))
    except NotebookInputError as exc:
        print(f"notebooks_run: error: {exc}", file=sys.stderr)
        return 2
    for name in names:
        try:
            rec = execute(name, a.out, _as_declared(name, params))
        except NotebookInputError as exc:
            print(f"notebooks_run: error: {exc}", file=sys.stderr)
            return 2
        except NotebookFailed as exc:
            print(f"notebooks_run: error: {exc}", file=sys.stderr)
            return 1
        if a.record_runtimes:
            record_runtime(name, rec["executed_seconds"])
        for line in warning_lines(Path(a.out) / f"{name}.ipynb"):
            print(f"[notebooks] {name}: warning text in the output, {line}", file=sys.stderr)
        scalars = {k: v for k, v in rec["metrics"].items() if isinstance(v, (int, float, str)) and len(str(v)) < 60}
        print(f"[notebooks] {name}: {rec['executed_seconds']:.1f}s -> {a.out}/{name}.json")
        if scalars:
            print("             " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in scalars.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
