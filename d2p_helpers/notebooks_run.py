"""Run notebooks headless with papermill (used by `make notebooks`, `make demo` and the tests)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def execute(name: str, out_dir: str | Path, parameters: dict | None = None, kernel: str = "python3",
            timeout: int | None = None) -> dict:
    """Execute notebooks/<name>.ipynb into out_dir; return the JSON record the notebook wrote."""
    import papermill as pm
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"out_dir": str(out_dir), **(parameters or {})}
    t0 = time.perf_counter()
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"), parameters=params,
                        kernel_name=kernel, cwd=str(NOTEBOOKS), progress_bar=False, execution_timeout=timeout)
    record = json.loads((out_dir / f"{name}.json").read_text())
    record["executed_seconds"] = time.perf_counter() - t0
    return record


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
    a = ap.parse_args(argv)
    names = a.names or sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    params = {k: _value(v) for k, v in a.p}
    for name in names:
        rec = execute(name, a.out, params)
        scalars = {k: v for k, v in rec["metrics"].items() if isinstance(v, (int, float, str)) and len(str(v)) < 60}
        print(f"[notebooks] {name}: {rec['executed_seconds']}s -> {a.out}/{name}.json")
        if scalars:
            print("             " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in scalars.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
