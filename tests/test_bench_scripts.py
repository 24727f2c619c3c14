"""The benchmark scripts people run on other machines: what they do without a GPU, and what they record."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args, tmp_path, **env):
    return subprocess.run([sys.executable, str(ROOT / "studies" / "paper_protocol.py"), "--out", str(tmp_path / "pp"),
                           *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=900)


@pytest.mark.slow
def test_paper_protocol_without_cuda_says_what_it_would_do_and_writes_nothing(tmp_path):
    r = _run([], tmp_path, CUDA_VISIBLE_DEVICES="")
    assert r.returncode == 0 and "no CUDA device" in r.stdout and "--nsamples 128 --seqlen 2048" in r.stdout
    assert not (tmp_path / "pp").exists()
    bad = _run(["--methods", "sparsegpt,nope"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope" in bad.stderr


@pytest.mark.slow
def test_paper_protocol_records_every_substitution(tmp_path):
    r = _run(["--device", "cpu", "--dtype", "float32", "--methods", "wanda", "--settings", "0.5", "--nsamples", "2",
              "--seqlen", "32", "--eval-windows", "1"], tmp_path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "pp" / "paper_protocol.json").read_text())
    assert set(rec["substituted"]) == {"model", "calib", "eval"}
    assert rec["protocol"]["model"] == "smollm2-135m" and rec["records"][0]["ppl"]["wiki"] > 1
    assert "substituted model: facebook/opt-125m -> smollm2-135m" in r.stdout
    assert "paper OPT-125M Wanda | 38.88" in (tmp_path / "pp" / "paper_protocol.md").read_text()


def test_gpu_transfer_parts_join_to_the_same_bytes_and_refuse_corruption(tmp_path):
    from studies.gpu_transfer import pack, unpack
    src = tmp_path / "model.gguf"
    src.write_bytes(os.urandom(3 * (1 << 20) + 123))
    m = pack(src, tmp_path / "t", part_mib=1)
    assert len(m["parts"]) == 4 and all(p["bytes"] <= 1 << 20 for p in m["parts"])
    assert unpack(tmp_path / "t").read_bytes() == src.read_bytes()
    (tmp_path / "t" / "part-2").write_bytes(b"x")
    with pytest.raises(SystemExit, match="part-2 is corrupt"):
        unpack(tmp_path / "t")
    (tmp_path / "t" / "part-3").unlink()
    with pytest.raises(SystemExit, match="not here yet: part-3"):
        unpack(tmp_path / "t")
