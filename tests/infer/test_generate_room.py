"""generate needs max_len >= prompt + max_new_tokens - 1 (the last token is never fed back); the spare position of a
CUDA graph's warm-up only where there is a graph."""

from __future__ import annotations

import torch

import foxacp
from foxacp.model import FoxLM, ModelConfig


def test_prompt_plus_new_tokens_minus_one_fits_without_cuda_graph():
    torch.manual_seed(0)
    m = FoxLM(ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="torch")).eval()
    p = torch.randint(0, 64, (5,))
    roomy = foxacp.generate(m, [p], 2, max_len=7)
    tight = foxacp.generate(m, [p], 2, max_len=6)  # 5 prompt positions + 1 fed-back token = 6: fits
    assert torch.equal(tight[0], roomy[0])
