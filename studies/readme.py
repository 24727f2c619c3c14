"""Keep README tables generated: copy results/*.md between markers, never type numbers by hand."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = {"bench": "results/bench.md", "qkv": "results/qkv_selectors.md", "hparams": "results/hparams.md",
          "zeroshot": "results/zeroshot.md", "vision": "results/vision.md", "timing": "results/timing.md",
          "lora": "results/lora.md", "bench_paper_n": "results/bench_paper_n.md", "recipes": "results/recipes.md",
          "reconstruct": "results/reconstruct.md"}


def block_text(name: str) -> str:
    path = ROOT / BLOCKS[name]
    if not path.exists():
        return f"_Not measured yet: run the script that writes `{BLOCKS[name]}`._"
    body = path.read_text().strip().splitlines()
    body = [("#" + line) if line.startswith("#") else line for line in body]   # demote headings one level
    return f"_From `{BLOCKS[name]}` (generated; do not edit here)._\n\n" + "\n".join(body)


def render(readme: str) -> str:
    for name in BLOCKS:
        pattern = re.compile(rf"(<!-- {name}:start -->)\n.*?(<!-- {name}:end -->)", re.S)   # empty blocks too
        readme = pattern.sub(lambda m: f"{m.group(1)}\n{block_text(name)}\n{m.group(2)}", readme)
    return readme


def main() -> int:
    path = ROOT / "README.md"
    path.write_text(render(path.read_text()))
    print("[readme] tables refreshed from results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
