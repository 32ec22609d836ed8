"""FoxLM and its HF model against the definition (method.md), written here afresh in float64: every variant with
GQA, packed documents, chunked cached prefill, HF left padding; parameter counts; the static logit bound."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from foxacp.model import FoxLM, ModelConfig
from foxacp.model.config import n_params


def _cfg(variant="fox_pro", **kw):
    kw = dict(vocab_size=64, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, attn_backend="torch") | kw
    return ModelConfig(variant=variant, **kw)


def _perturbed(cfg, seed=0):
    torch.manual_seed(seed)
    m = FoxLM(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
            else:
                p.mul_(5.0)
    return m


def reference_logits(m: FoxLM, ids: torch.Tensor) -> torch.Tensor:
    """FoX / FoX Pro / RoPE transformer straight from method.md, float64, one sequence per row."""
    cfg = m.config
    W = {k: v.detach().double() for k, v in m.state_dict().items()}
    hq, hkv, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    grp = hq // hkv
    qk_eps = cfg.norm_eps if cfg.qk_norm_eps is None else cfg.qk_norm_eps

    def rms(x, g, eps):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * g

    B, T = ids.shape
    x = W["embed.weight"][ids]
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        h = rms(x, W[p + "attn_norm.weight"], cfg.norm_eps)
        q = (h @ W[p + "attn.wq.weight"].T).view(B, T, hq, D)
        k = (h @ W[p + "attn.wk.weight"].T).view(B, T, hkv, D)
        v = (h @ W[p + "attn.wv.weight"].T).view(B, T, hkv, D)
        if cfg.variant == "fox_pro":
            for name in ("k", "v"):
                y = k if name == "k" else v
                a = torch.sigmoid(h @ W[p + f"attn.{name}_shift.proj.weight"].T)  # (B, T, hkv)
                out = torch.empty_like(y)
                for t in range(T):
                    prev = y[:, t - 1] if t > 0 else torch.zeros_like(y[:, 0])
                    out[:, t] = a[:, t, :, None] * prev + (1 - a[:, t, :, None]) * y[:, t]
                if name == "k":
                    k = out
                else:
                    v = out
            q = rms(q, W[p + "attn.q_norm.weight"].view(hq, D), qk_eps)
            k = rms(k, W[p + "attn.k_norm.weight"].view(hkv, D), qk_eps)
        if cfg.variant == "transformer":
            pos = torch.arange(T, dtype=torch.float64)
            half = D // 2
            inv = cfg.rope_base ** (-2 * torch.arange(half, dtype=torch.float64) / D)
            ang = pos[:, None] * inv  # (T, half)
            cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]

            def rope(z, half=half, cos=cos, sin=sin):
                z1, z2 = z[..., :half], z[..., half:]
                return torch.cat([z1 * cos - z2 * sin, z2 * cos + z1 * sin], -1)

            q, k = rope(q), rope(k)
            logf = torch.zeros(B, T, hq, dtype=torch.float64)
        else:
            logf = F.logsigmoid(h @ W[p + "attn.fgate.weight"].T + W[p + "attn.fgate.bias"])
        o = torch.zeros(B, T, hq, D, dtype=torch.float64)
        for head in range(hq):
            kh, vh = k[:, :, head // grp], v[:, :, head // grp]
            c = logf[:, :, head].cumsum(1)
            s = q[:, :, head] @ kh.transpose(1, 2) / math.sqrt(D) + c[:, :, None] - c[:, None, :]
            s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
            o[:, :, head] = torch.softmax(s, -1) @ vh
        if cfg.variant == "fox_pro":
            g = torch.sigmoid(h @ W[p + "attn.wg.weight"].T).view(B, T, hq, D)
            o = rms(o, W[p + "attn.o_norm.weight"].view(hq, D), cfg.norm_eps) * g
        x = x + o.reshape(B, T, hq * D) @ W[p + "attn.wo.weight"].T
        h = rms(x, W[p + "mlp_norm.weight"], cfg.norm_eps)
        x = (
            x
            + (F.silu(h @ W[p + "mlp.w_gate.weight"].T) * (h @ W[p + "mlp.w_up.weight"].T))
            @ W[p + "mlp.w_down.weight"].T
        )
    return rms(x, W["norm.weight"], cfg.norm_eps) @ W["lm_head.weight"].T


@pytest.mark.parametrize("variant", ["fox_pro", "fox", "transformer"])
def test_foxlm_matches_float64_definition(variant):
    m = _perturbed(_cfg(variant, acp=False)).double()
    ids = torch.randint(0, 64, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = m(ids)
    torch.testing.assert_close(got, reference_logits(m, ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["fox_pro", "fox", "transformer"])
@pytest.mark.parametrize("kv", [None, 1, 2])
def test_param_count(variant, kv):
    cfg = ModelConfig(vocab_size=70, n_layers=2, d_model=96, n_heads=4, n_kv_heads=kv, variant=variant, mlp_ratio=3.0)
    with torch.device("meta"):
        m = FoxLM(cfg)
    assert n_params(cfg) == sum(p.numel() for p in m.parameters())
    assert n_params(cfg, embedding=False) == sum(p.numel() for p in m.parameters()) - m.embed.weight.numel()


@pytest.mark.parametrize("variant", ["fox_pro", "fox", "transformer"])
def test_packed_docs_across_row_ends_match_float64_definition(variant):
    m = _perturbed(_cfg(variant, acp=True)).double()
    ids = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(2))
    cu = torch.tensor([0, 7, 26, 33, 40], dtype=torch.int32)  # doc 2 spans the row end at 20
    with torch.no_grad():
        got = m(ids, cu_seqlens=cu, max_seqlen=19).reshape(40, -1)
        flat = ids.reshape(-1)
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
            want = reference_logits(m, flat[a:b][None])[0]
            torch.testing.assert_close(got[a:b], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["fox_pro", "transformer"])
def test_chunked_cache_matches_float64_definition(variant):
    m = _perturbed(_cfg(variant, acp=True)).double()
    ids = torch.randint(0, 64, (2, 45), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = reference_logits(m, ids)
        cache = m.new_cache(2, 64)
        outs, s = [], 0
        for n in [1, 20, 3, 1, 17, 3]:
            outs.append(m(ids[:, s : s + n], cache=cache))
            s += n
        got = torch.cat(outs, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_hf_left_padding_matches_float64_definition():
    pytest.importorskip("transformers")
    from foxacp.hf import FoxForCausalLM

    m = _perturbed(_cfg("fox_pro", acp=True)).double()
    hf = FoxForCausalLM.from_foxlm(m).eval()
    ids = torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :5] = 0
    with torch.no_grad():
        got = hf(ids, attention_mask=mask).logits
        torch.testing.assert_close(got[0], reference_logits(m, ids[:1])[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1, 5:], reference_logits(m, ids[1:, 5:])[0], rtol=1e-5, atol=1e-5)
        out = hf(ids, attention_mask=mask, use_cache=True).logits
        torch.testing.assert_close(out[1, 5:], reference_logits(m, ids[1:, 5:])[0], rtol=1e-5, atol=1e-5)


def test_the_static_bound_holds_at_its_extreme_and_a_safety_below_one_is_refused():
    """qk_bound() >= |q.k| / sqrt(D) where the QK-norm makes q and k one-hot (the largest product it allows); a
    qk_bound_safety below 1 would undercut that (ACP's eps guarantee void), so the config refuses it."""
    from foxacp.model.attention import ForgettingAttention

    with pytest.raises(ValueError, match="qk_bound_safety must be >= 1"):
        ModelConfig(vocab_size=16, n_layers=1, d_model=64, n_heads=2, qk_bound_safety=0.5)
    attn = ForgettingAttention(ModelConfig(vocab_size=16, n_layers=1, d_model=64, n_heads=2))
    one_hot = torch.zeros(1, 1, 2, 32)
    one_hot[..., 0] = 1.0
    with torch.no_grad():
        q, k = attn.q_norm(one_hot), attn.k_norm(one_hot)
    reached = (q * k).sum(-1)[0, 0] / math.sqrt(32)  # ~ sqrt(32) = 5.66
    assert (reached <= attn.qk_bound()).all(), (reached, attn.qk_bound())
