"""Import of official FoX checkpoints: a directory in their layout (random weights) against a float64 forward
written here from their equations; unsupported configs, unknown keys and wrong shapes are refused by name."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

pytest.importorskip("transformers")
from foxacp.hf.official import OfficialCheckpointError, load_official, official_model_config  # noqa: E402

V, D_MODEL, H, LAYERS, INTER = 50, 64, 2, 2, 256
HD = D_MODEL // H


def official_config(pro: bool, shared: bool = False, **kw) -> dict:
    flags = dict(use_k_shift=pro, use_v_shift=pro, qk_norm=pro, use_output_gate=pro, use_output_norm=pro)
    return {
        "model_type": "forgetting_transformer-project_fox",
        "vocab_size": V,
        "hidden_size": D_MODEL,
        "num_hidden_layers": LAYERS,
        "num_heads": H,
        "num_kv_heads": None,
        "hidden_ratio": 3.5 if pro else 4,
        "intermediate_size": None,
        "hidden_act": "swish",
        "norm_eps": 1e-6,
        "fgate_type": "full",
        "use_rope": False,
        "ogate_act": "sigmoid",
        "qk_norm_share_param_across_head": shared,
        "tie_word_embeddings": False,
        **flags,
        **kw,
    }


def official_weights(pro: bool, shared: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.1, around=0.0):
        return around + scale * torch.randn(*shape, generator=g)

    w = {
        "model.embeddings.weight": rnd(V, D_MODEL, scale=1.0),
        "model.norm.weight": rnd(D_MODEL, around=1.0),
        "lm_head.weight": rnd(V, D_MODEL),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w |= {
            p + "attn_norm.weight": rnd(D_MODEL, around=1.0),
            p + "mlp_norm.weight": rnd(D_MODEL, around=1.0),
            p + "attn.q_proj.weight": rnd(D_MODEL, D_MODEL, scale=0.2),
            p + "attn.o_proj.weight": rnd(D_MODEL, D_MODEL),
            p + "attn.fgate_proj.weight": rnd(H, D_MODEL),
            p + "attn.fgate_proj.bias": rnd(H, scale=1.0, around=2.0),
            p + "mlp.gate_proj.weight": rnd(2 * INTER, D_MODEL),
            p + "mlp.down_proj.weight": rnd(D_MODEL, INTER),
        }
        if pro:
            gains = HD if shared else D_MODEL
            w |= {
                p + "attn.k_proj.linear.weight": rnd(D_MODEL, D_MODEL, scale=0.2),
                p + "attn.v_proj.linear.weight": rnd(D_MODEL, D_MODEL),
                p + "attn.k_proj.shift_proj.weight": rnd(H, D_MODEL, scale=0.5),
                p + "attn.v_proj.shift_proj.weight": rnd(H, D_MODEL, scale=0.5),
                p + "attn.ogate_proj.weight": rnd(D_MODEL, D_MODEL),
                p + "attn.output_norm.weight": rnd(D_MODEL, around=1.0),
                p + "attn.q_norm.weight": rnd(gains, around=1.0, scale=0.3),
                p + "attn.k_norm.weight": rnd(gains, around=1.0, scale=0.3),
            }
        else:
            w |= {
                p + "attn.k_proj.weight": rnd(D_MODEL, D_MODEL, scale=0.2),
                p + "attn.v_proj.weight": rnd(D_MODEL, D_MODEL),
            }
    return w


def write_checkpoint(path, config, weights):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in weights.items()}, path / "model.safetensors")
    return path


def reference_logits(config: dict, w: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Their equations in float64: pre-norm blocks; FoX attention with the Pro options when on."""
    w = {k: v.double() for k, v in w.items()}
    eps, pro = config["norm_eps"], config["use_k_shift"]

    def rms(x, gain, eps_):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps_) * gain

    def per_head_rms(x, gain, eps_):  # x (B, T, H*D); gain (H*D,) or (D,) shared by every head
        xh = x.unflatten(-1, (H, HD))
        gain = gain.view(H, HD) if gain.numel() == D_MODEL else gain
        return rms(xh, gain, eps_).flatten(-2)

    def shift(y, alpha):  # y (B, T, H*D), alpha (B, T, H): alpha * y_{t-1} + (1 - alpha) * y_t, y_{-1} = 0
        yh = y.unflatten(-1, (H, HD))
        prev = torch.cat([torch.zeros_like(yh[:, :1]), yh[:, :-1]], 1)
        return (alpha[..., None] * prev + (1 - alpha[..., None]) * yh).flatten(-2)

    B, T = ids.shape
    x = w["model.embeddings.weight"][ids]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "attn_norm.weight"], eps)
        q = h @ w[p + "attn.q_proj.weight"].T
        if pro:
            k = shift(
                h @ w[p + "attn.k_proj.linear.weight"].T, torch.sigmoid(h @ w[p + "attn.k_proj.shift_proj.weight"].T)
            )
            v = shift(
                h @ w[p + "attn.v_proj.linear.weight"].T, torch.sigmoid(h @ w[p + "attn.v_proj.shift_proj.weight"].T)
            )
            q = per_head_rms(q, w[p + "attn.q_norm.weight"], 1e-5)
            k = per_head_rms(k, w[p + "attn.k_norm.weight"], 1e-5)
        else:
            k, v = h @ w[p + "attn.k_proj.weight"].T, h @ w[p + "attn.v_proj.weight"].T
        log_f = F.logsigmoid(h @ w[p + "attn.fgate_proj.weight"].T + w[p + "attn.fgate_proj.bias"])  # (B, T, H)
        c = log_f.cumsum(1).transpose(1, 2)  # (B, H, T)
        qh, kh, vh = (t.unflatten(-1, (H, HD)).transpose(1, 2) for t in (q, k, v))
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(HD) + c[..., :, None] - c[..., None, :]
        o = torch.softmax(scores.masked_fill(~causal, -math.inf), -1) @ vh
        o = o.transpose(1, 2).flatten(-2)
        if pro:
            o = per_head_rms(o, w[p + "attn.output_norm.weight"], eps) * torch.sigmoid(
                h @ w[p + "attn.ogate_proj.weight"].T
            )
        x = x + o @ w[p + "attn.o_proj.weight"].T
        h = rms(x, w[p + "mlp_norm.weight"], eps)
        gate, up = (h @ w[p + "mlp.gate_proj.weight"].T).chunk(2, -1)
        x = x + (F.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


@pytest.mark.parametrize(
    "pro,shared", [(True, False), (True, True), (False, False)], ids=["pro", "pro_shared", "llama"]
)
def test_official_layout_gives_the_logits_of_their_equations(tmp_path, pro, shared):
    config, weights = official_config(pro, shared), official_weights(pro, shared)
    path = write_checkpoint(tmp_path / "ckpt", config, weights)
    ids = torch.randint(0, V, (2, 37), generator=torch.Generator().manual_seed(3))
    expected = reference_logits(config, weights, ids)
    exact = load_official(path, acp=False)
    assert exact.config.variant == ("fox_pro" if pro else "fox") and exact.config.norm_eps == 1e-6
    with torch.no_grad():
        torch.testing.assert_close(exact(ids).double(), expected, rtol=1e-5, atol=5e-5)
        pruned = load_official(path)  # ACP on (foxacp's default tolerance)
        torch.testing.assert_close(pruned(ids).double(), expected, rtol=1e-5, atol=5e-5)


def test_the_qk_norm_eps_survives_save_pretrained_and_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    from foxacp.hf import FoxForCausalLM

    config, weights = official_config(True, False), official_weights(True, False)
    # Gains near 0 make the norms' eps matter: 1e-5 against norm_eps 1e-6 moves the logits well past the tolerance.
    weights = {k: (v * 1e-3 if k.endswith(("proj.linear.weight", "q_proj.weight")) else v) for k, v in weights.items()}
    path = write_checkpoint(tmp_path / "ckpt", config, weights)
    ids = torch.randint(0, V, (1, 19), generator=torch.Generator().manual_seed(4))
    expected = reference_logits(config, weights, ids)
    model = load_official(path, acp=False)
    assert (model.config.qk_norm_eps, model.config.norm_eps) == (1e-5, 1e-6)
    FoxForCausalLM.from_foxlm(model).save_pretrained(tmp_path / "hf")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits.double(), expected, rtol=1e-5, atol=5e-5)
        other = FoxForCausalLM.from_foxlm(load_official(path, acp=False, qk_norm_eps=None)).eval()
        assert not torch.allclose(other(ids).logits.double(), expected, rtol=1e-5, atol=5e-5)
    with pytest.raises(ValueError, match="qk_norm_eps"):
        official_model_config(config, qk_norm_eps=0.0)


def test_unknown_and_missing_keys_and_wrong_shapes_are_named(tmp_path):
    config, good = official_config(True), official_weights(True, False)
    extra = dict(good, **{"model.layers.0.attn.rotary.inv_freq": torch.zeros(16)})
    with pytest.raises(OfficialCheckpointError, match=r"unknown \['model.layers.0.attn.rotary.inv_freq'\]"):
        load_official(write_checkpoint(tmp_path / "a", config, extra))
    missing = {k: v for k, v in good.items() if k != "model.layers.1.attn.ogate_proj.weight"}
    with pytest.raises(OfficialCheckpointError, match=r"missing \['model.layers.1.attn.ogate_proj.weight'\]"):
        load_official(write_checkpoint(tmp_path / "b", config, missing))
    wrong = dict(good, **{"model.layers.0.mlp.gate_proj.weight": torch.zeros(INTER, D_MODEL)})
    with pytest.raises(OfficialCheckpointError, match=r"gate_proj.weight has shape \(256, 64\), expected \(512, 64\)"):
        load_official(write_checkpoint(tmp_path / "c", config, wrong))
    # Shared QK-norm gains in a checkpoint whose config says per head: a shape error, not a silent tiling.
    shared = official_weights(True, True)
    with pytest.raises(OfficialCheckpointError, match=r"q_norm.weight has shape \(32,\), expected \(64,\)"):
        load_official(write_checkpoint(tmp_path / "d", config, shared))
    with pytest.raises(OfficialCheckpointError, match="no weights"):
        (tmp_path / "d" / "model.safetensors").unlink()
        load_official(tmp_path / "d")


@pytest.mark.parametrize(
    "change,match",
    [
        ({"model_type": "llama"}, "model_type"),
        ({"use_rope": True}, "use_rope"),
        ({"fgate_type": "bias_only"}, "fgate_type"),
        ({"use_output_norm": False}, "unsupported mix"),
        ({"num_kv_heads": 1}, "num_kv_heads"),
        ({"ogate_act": "silu"}, "ogate_act"),
        ({"intermediate_size": 200}, "intermediate_size 200"),
    ],
)
def test_unsupported_configs_are_refused_by_name(change, match):
    with pytest.raises(OfficialCheckpointError, match=match):
        official_model_config({**official_config(True), **change})


def test_the_swiglu_width_follows_their_rounding():
    for d, ratio in [(768, 3.5), (1024, 3.5), (1536, 3.5), (768, 4), (2048, 4)]:
        width = int(d * ratio * 2 / 3)
        expected = 256 * ((width + 255) // 256)
        cfg = official_model_config(official_config(True, hidden_size=d, num_heads=d // 64, hidden_ratio=ratio))
        from foxacp.model import mlp_hidden

        assert mlp_hidden(cfg) == expected
