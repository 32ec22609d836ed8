import math

import torch

from foxacp.model import ModelConfig
from foxacp.model.attention import ForgettingAttention
from foxacp.model.layers import TokenShift, apply_rope
from foxacp.model.lm import doc_positions


def test_doc_positions():
    cu = torch.tensor([0, 3, 10, 12], dtype=torch.int32)
    pos = doc_positions(2, 6, cu, torch.device("cpu"))
    assert pos.tolist() == [[0, 1, 2, 0, 1, 2], [3, 4, 5, 6, 0, 1]]
    assert doc_positions(2, 3, None, torch.device("cpu")).tolist() == [[0, 1, 2]] * 2


def test_token_shift_matches_loop_and_resets():
    torch.manual_seed(0)
    shift = TokenShift(8, 2)
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 2, 4)
    pos = torch.tensor([[0, 1, 2, 0, 1], [5, 6, 0, 1, 2]])
    out = shift(x, y, pos)
    a = torch.sigmoid(x @ shift.proj.weight.t())[..., None]
    for b in range(2):
        for t in range(5):
            prev = y[b, t - 1] if t > 0 and pos[b, t] != 0 else torch.zeros(2, 4)
            want = a[b, t] * prev + (1 - a[b, t]) * y[b, t]
            torch.testing.assert_close(out[b, t], want)


def test_rope_is_relative():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(m: int, n: int) -> torch.Tensor:
        qm = apply_rope(q, torch.tensor([[m]]), 10000.0)
        kn = apply_rope(k, torch.tensor([[n]]), 10000.0)
        return (qm * kn).sum()

    torch.testing.assert_close(score(7, 3), score(104, 100))
    torch.testing.assert_close(score(0, 0), (q * k).sum())
    assert not torch.allclose(score(7, 3), score(7, 4))


def _attention_with_random_gains(n_heads: int, n_kv_heads: int, head_dim: int) -> ForgettingAttention:
    cfg = ModelConfig(vocab_size=16, n_layers=1, d_model=n_heads * head_dim, n_heads=n_heads, n_kv_heads=n_kv_heads)
    attn = ForgettingAttention(cfg)
    with torch.no_grad():
        attn.q_norm.weight.normal_(0.0, 2.0)
        attn.k_norm.weight.normal_(0.0, 2.0)
    return attn


def test_qk_bound_bounds_logits():
    torch.manual_seed(0)
    hq, hkv, d = 4, 2, 32
    attn = _attention_with_random_gains(hq, hkv, d)
    u = attn.qk_bound()
    assert u.shape == (hq,) and not u.requires_grad
    for dtype in (torch.float32, torch.bfloat16):
        q = attn.q_norm((torch.randn(3, 200, hq, d) * 10).to(dtype)).float()
        k = attn.k_norm((torch.randn(3, 200, hkv, d) * 10).to(dtype)).float()
        k = k.repeat_interleave(hq // hkv, dim=2)  # query head h reads kv head h // group
        logits = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
        assert (logits.abs().amax(dim=(0, 2, 3)) <= u).all()


def test_qk_bound_is_tight():
    # q and k one-hot at the largest gains reach the bound (up to the safety factor and norm eps).
    torch.manual_seed(1)
    hq, d = 2, 32
    attn = _attention_with_random_gains(hq, hq, d)
    gq, gk = attn.q_norm.gains().detach(), attn.k_norm.gains().detach()
    with torch.no_grad():
        gk.copy_(gk.abs().amax(-1, keepdim=True) * torch.sign(gq))  # put k's max gain under q's max
        attn.k_norm.weight.copy_(gk.flatten())
    j = gq.abs().argmax(-1)
    one_hot = torch.nn.functional.one_hot(j, d).float()[None, None]  # (1, 1, H, D)
    q, k = attn.q_norm(one_hot), attn.k_norm(one_hot)
    reached = (q * k).sum(-1).abs()[0, 0] / math.sqrt(d)
    torch.testing.assert_close(reached * attn.cfg.qk_bound_safety, attn.qk_bound(), rtol=1e-3, atol=0)
