"""The small models the inference tests decode with (one place for their shape)."""

from __future__ import annotations

import torch

from foxacp.model import FoxLM, ModelConfig


def tiny_model(
    variant: str = "fox_pro",
    *,
    acp: bool = False,
    bias: float = -1.0,
    backend: str | None = "torch",
    vocab: int = 64,
    d_model: int = 64,
    init_std: float = 0.1,
    **kw,
) -> FoxLM:
    """A seeded 2-layer model with 4 query heads and 2 KV heads (GQA), in eval mode."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=vocab, n_layers=2, d_model=d_model, n_heads=4, n_kv_heads=2, variant=variant, acp=acp,
        fgate_bias_init=bias, init_std=init_std, attn_backend=backend, **kw,
    )  # fmt: skip
    return FoxLM(cfg).eval()


@torch.no_grad()
def full_greedy(model: FoxLM, prompt: torch.Tensor, n: int) -> torch.Tensor:
    """prompt (T,) followed by n greedy tokens, each the argmax of a full forward over everything before it (the
    slow twin of generate)."""
    seq = prompt.clone()
    for _ in range(n):
        seq = torch.cat([seq, model(seq[None])[0, -1].argmax()[None]])
    return seq
