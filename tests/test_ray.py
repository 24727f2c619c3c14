"""Ray sweeps: a real local head on loopback, two tiny runs through it, the same records as local runs."""
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from studies.runs import RunSpec, cached, run

pytestmark = pytest.mark.slow
TINY = dict(model="tiny-llama", nsamples=2, seqlen=32, eval=("wiki",), eval_windows=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path_factory):
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.fail("ray is not installed: `make setup` installs the [ray] extra")
    temp = Path("/tmp") / f"rt{_free_port()}"    # short: Ray's socket paths must stay under 107 characters
    port = _free_port()
    start = [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--num-cpus", "2", "--temp-dir", str(temp), "--include-dashboard", "false", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_runs_equal_local_runs_and_land_in_the_same_cache(ray_head, tmp_path):
    from studies.ray_sweep import run_on_ray
    specs = [RunSpec.make("wanda", "0.5", **TINY), RunSpec.make("d2prune", "2:4", **TINY)]
    remote = run_on_ray(specs, ray_head, cache_dir=tmp_path / "ray_cache", log=lambda *_: None)
    assert all(cached(s, tmp_path / "ray_cache") == r for s, r in zip(specs, remote))
    for spec, rec in zip(specs, remote):
        local = run(spec, tmp_path / "local_cache")
        assert rec["spec"] == local["spec"]
        assert rec["ppl"]["wiki"] == pytest.approx(local["ppl"]["wiki"], rel=1e-6)
        assert [r["zeros"] for r in rec["per_linear"]] == [r["zeros"] for r in local["per_linear"]]
    # a second sweep finds everything cached and submits nothing
    lines = []
    run_on_ray(specs, ray_head, cache_dir=tmp_path / "ray_cache", log=lines.append)
    assert lines[0].startswith("[ray] 0 of 2 runs submitted")
