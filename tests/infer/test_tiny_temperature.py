"""A temperature so small that float32 makes it 0 is greedy, not 0/0 = NaN (which made argmax pick token 0)."""

import torch

import foxacp
from foxacp.infer.sampling import check_sampling, sample
from foxacp.model import FoxLM, ModelConfig


def test_a_temperature_below_float32_range_is_greedy_not_nan():
    logits = torch.tensor([[1.0, 3.0, 0.5, -2.0]])
    check_sampling(1e-50, None, None)  # accepted: a finite real number >= 0
    g = torch.Generator().manual_seed(0)
    draws = [int(sample(logits, temperature=1e-50, generator=g)) for _ in range(8)]
    assert draws == [1] * 8


def test_generate_with_a_tiny_temperature_equals_greedy():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=1, d_model=32, n_heads=2, attn_backend="torch", init_std=0.5)
    model = FoxLM(cfg).eval()
    prompt = [[3, 9, 27, 17]]
    (greedy,) = foxacp.generate(model, prompt, 6, temperature=0)
    (tiny,) = foxacp.generate(model, prompt, 6, temperature=1e-300, seed=0)
    assert tiny.tolist() == greedy.tolist()
