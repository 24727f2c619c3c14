"""Task data as running text (HellaSwag contexts with their gold endings), for activation studies."""
from __future__ import annotations


def hellaswag_text(limit: int = 2000) -> str:
    """Join `limit` HellaSwag validation contexts, each followed by its correct ending."""
    from .zeroshot import build_doc, load_rows
    docs = [build_doc("hellaswag", r) for r in load_rows("hellaswag", limit)]
    return "\n\n".join(d.contexts[0] + d.continuations[d.gold] for d in docs)
