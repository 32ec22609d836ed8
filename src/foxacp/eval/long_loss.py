"""Loss at every token position of long held-out documents, one document per forward (no packing, no windows).

docs = read_documents("held_out/")                     # texts
rec = loss_by_position(model, [tok.encode(d) for d in docs], max_len=4 * seq_len)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from foxacp.data.corpus import TEXT_SUFFIXES, looks_binary

from .loss import position_buckets, token_losses


def read_documents(path: str | Path) -> list[str]:
    """The texts of ``path``: a text file is one document; a folder gives one per text file under it
    (suffixes .txt .md .rst .py, sorted by relative path). Empty texts and files that look binary
    (``data.corpus.looks_binary``, as training skips them) are left out.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` holds no non-empty text document.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    )
    files = [p for p in files if not looks_binary(p)]
    texts = [t for t in (p.read_text(encoding="utf-8", errors="replace") for p in files) if t.strip()]
    if not texts:
        raise ValueError(f"data path {str(path)!r} holds no non-empty text documents ({', '.join(TEXT_SUFFIXES)})")
    return texts


def prefix_average(loss: list[float | None], count: list[int]) -> list[float | None]:
    """Mean loss over positions 0..t for every t, each position weighted by its count of documents.

    ``loss[t]`` is the mean at position t over ``count[t]`` documents (None where the count is 0)."""
    out: list[float | None] = []
    total, n = 0.0, 0
    for v, c in zip(loss, count, strict=True):
        if c:
            total += v * c
            n += c
        out.append(total / n if n else None)
    return out


@torch.no_grad()
def loss_by_position(
    model: nn.Module,
    documents: list[list[int]],
    *,
    max_len: int,
    buckets: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Next-token loss at each position 0..max_len-1 of every document, averaged over the documents that reach it.

    ``documents``: token ids per document; each runs alone from its first token, cut to max_len + 1 tokens
    (position t predicts token t + 1). Documents of fewer than 2 tokens are skipped.

    Returns {"loss": mean over all scored tokens, "tokens", "documents", "max_len",
    "loss_by_position": [max_len] mean (None where no document reaches), "documents_by_position": [max_len],
    "prefix_loss": [max_len] mean over positions 0..t, "position_loss"/"bucket_size" (``position_buckets``)}.

    Raises:
        ValueError: max_len < 1, or no document has 2 tokens.
    """
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be an int >= 1, got {max_len!r}")
    docs = [d[: max_len + 1] for d in documents if len(d) >= 2]
    if not docs:
        raise ValueError("loss_by_position needs at least one document of 2 or more tokens")
    device = next(model.parameters()).device
    loss_sum = torch.zeros(max_len, dtype=torch.float64)
    count = torch.zeros(max_len, dtype=torch.float64)
    model.eval()
    for ids in tqdm(docs, desc="loss by position", unit="doc", disable=not progress):
        ids = torch.as_tensor(ids, dtype=torch.long, device=device)[None]
        loss = token_losses(model, {"input_ids": ids[:, :-1], "labels": ids[:, 1:]})[0].double().cpu()
        loss_sum[: loss.numel()] += loss
        count[: loss.numel()] += 1
    mean = [s / c if c else None for s, c in zip(loss_sum.tolist(), count.tolist(), strict=True)]
    counts = [int(c) for c in count.tolist()]
    return {
        "loss": float(loss_sum.sum() / count.sum()),
        "tokens": int(count.sum()),
        "documents": len(docs),
        "max_len": max_len,
        "loss_by_position": mean,
        "documents_by_position": counts,
        "prefix_loss": prefix_average(mean, counts),
        **position_buckets(loss_sum, count, buckets),
    }
