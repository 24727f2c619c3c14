"""Hyper-parameter studies of D²Prune on the embedded model (issue: hyper-parameters). Cached and resumable.

Writes results/hparams.json and results/hparams.md. About 50 distinct prunings at the default settings
(runs shared between studies, e.g. λ=(1,0) and s=1500 at 70%, are one cache entry). Two processes may
run different --studies at once on the same cache; `--report` then writes the files from the cache only."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from d2p_helpers.experiments import hparam_markdown, hparam_study  # noqa: E402
from d2p_helpers.record import versions, write_json, write_text  # noqa: E402

BASE = {"model": "smollm2-135m", "calib": "news", "nsamples": 16, "seqlen": 256, "eval": ["wiki"], "eval_windows": 16}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--lambda-grid", default="0,0.5,1", help="coarser than the paper's 5x5 to fit a CPU budget")
    ap.add_argument("--s-values", default="500,1000,1500,2000,L,auto",
                    help="L: s = calibration sequence length; auto: the normalised D² term (--d2-norm mean)")
    ap.add_argument("--n-values", default="16,32,64,128")
    ap.add_argument("--sparsities", default="0.5,0.7")
    ap.add_argument("--studies", default="lambda,s,nsamples", help="which studies to run (comma list)")
    ap.add_argument("--report", action="store_true", help="write the files from cached runs only")
    a = ap.parse_args()
    seeds = [int(x) for x in a.seeds.split(",")]
    studies = hparam_study(BASE, seeds, [float(x) for x in a.lambda_grid.split(",")],
                           [x if x in ("L", "auto") else float(x) for x in a.s_values.split(",")],
                           [int(x) for x in a.n_values.split(",")], [float(x) for x in a.sparsities.split(",")],
                           ROOT / "results" / "cache", progress=not a.report, studies=tuple(a.studies.split(",")),
                           cached_only=a.report)
    write_json(ROOT / "results" / "hparams.json", {"protocol": BASE, "seeds": seeds, "studies": studies,
                                                  "versions": versions()})
    write_text(ROOT / "results" / "hparams.md", hparam_markdown(studies, BASE, seeds))
    if all(studies.values()):
        from d2p_helpers import plots
        from d2p_helpers.paper import OPT125M_LAMBDA_80, OPT125M_NSAMPLES_80
        plots.style()
        plots.save(plots.hparam_figure(studies, OPT125M_LAMBDA_80, OPT125M_NSAMPLES_80), ROOT / "figures" / "hparams.png",
                   caption=f"calib {BASE['calib']} {BASE['nsamples']}x{BASE['seqlen']} (N varies in the last panel), "
                           f"eval {BASE['eval'][0]} test; seeds {seeds}; error bars: spread over seeds")
    print((ROOT / "results" / "hparams.md").read_text())
