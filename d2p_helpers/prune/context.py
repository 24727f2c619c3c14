"""The per-block context a frozen-projection policy reads (selectors.py), built by the engine."""
from __future__ import annotations

from dataclasses import dataclass

from .config import PruneConfig


@dataclass
class BlockContext:
    """What a per-block frozen-projection policy sees (auto:kl, auto:outlier): the block as the engine holds it,
    its linears and q/k/v names, the statistics of this pass, the calibration inputs, the block's outputs before
    pruning, and where its attention module is (from the adapter, never rebuilt from names)."""
    index: int
    block: object
    linears: dict
    qkv: dict
    stats: dict
    inputs: object
    dense_out: object
    cfg: PruneConfig
    device: object
    attention_path: str
