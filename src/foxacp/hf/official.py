"""Import of the official FoX checkpoints (github zhixuan-lin/forgetting-transformer) into a FoxLM.

Their ForgettingTransformerForCausalLM (config model_type "forgetting_transformer-project_fox") names its
weights, for layer i under ``model.layers.{i}.``:

    attn_norm.weight, mlp_norm.weight                    (d,)        pre-norm gains (eps: config norm_eps)
    attn.q_proj.weight, attn.o_proj.weight               (d, d)
    attn.k_proj.weight | attn.k_proj.linear.weight       (d, d)      .linear when use_k_shift (likewise v)
    attn.k_proj.shift_proj.weight                        (H, d)      token-shift gate, no bias
    attn.fgate_proj.weight, attn.fgate_proj.bias         (H, d), (H,)
    attn.q_norm.weight, attn.k_norm.weight               (d,) per head, or (D,) shared by every head
                                                                     (qk_norm_share_param_across_head); eps 1e-5
    attn.ogate_proj.weight                               (d, d)      output gate, sigmoid
    attn.output_norm.weight                              (d,)        per-head RMS norm, gated: norm(o) * sigmoid(g)
    mlp.gate_proj.weight                                 (2I, d)     fused [gate; up]: silu(first half) * second
    mlp.down_proj.weight                                 (d, I)

and model.embeddings.weight (V, d), model.norm.weight (d,), lm_head.weight (V, d) (the embedding when
tie_word_embeddings). FoX Pro has every attention option on (k/v shift, QK-norm, output gate and norm);
LLaMA-style FoX has none; other combinations (RoPE, GQA, data-independent gates, an output gate without its
norm) are refused by name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from foxacp.model import FoxLM, ModelConfig, mlp_hidden

MODEL_TYPE = "forgetting_transformer-project_fox"
# Their QK-norm modules keep their own default eps whatever config.norm_eps says: ModelConfig.qk_norm_eps.
QK_NORM_EPS = 1e-5
PRO_FLAGS = ("use_k_shift", "use_v_shift", "qk_norm", "use_output_gate", "use_output_norm")


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be mapped onto a FoxLM (the message says what and where)."""


def official_model_config(config: dict, **overrides) -> ModelConfig:
    """The ModelConfig of an official config.json (as a dict); overrides (acp, log_eps, ...) are applied last.

    Raises:
        OfficialCheckpointError: another model_type, or options FoxLM does not implement.
    """
    if config.get("model_type") != MODEL_TYPE:
        raise OfficialCheckpointError(f"config model_type is {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
    flags = {name: bool(config.get(name, False)) for name in PRO_FLAGS}
    if all(flags.values()):
        variant = "fox_pro"
        if config.get("ogate_act", "sigmoid") != "sigmoid":
            raise OfficialCheckpointError(f"ogate_act {config['ogate_act']!r}: only 'sigmoid' is supported")
    elif not any(flags.values()):
        variant = "fox"
    else:
        raise OfficialCheckpointError(f"unsupported mix of attention options {flags}: all on (Pro) or all off")
    refusals = {
        "fgate_type": (config.get("fgate_type", "full"), "full"),
        "use_rope": (bool(config.get("use_rope", False)), False),
        "attention_bias": (bool(config.get("attention_bias", False)), False),
        "hidden_act": (config.get("hidden_act", "swish"), "swish"),
        "window_size": (config.get("window_size"), None),
    }
    for name, (value, wanted) in refusals.items():
        if value != wanted:
            raise OfficialCheckpointError(f"config {name}={value!r} is not supported (FoxLM needs {wanted!r})")
    d, heads = config["hidden_size"], config["num_heads"]
    if config.get("num_kv_heads") not in (None, heads):
        raise OfficialCheckpointError(f"num_kv_heads={config['num_kv_heads']} != num_heads={heads} is not supported")
    fields = dict(
        vocab_size=config["vocab_size"],
        n_layers=config["num_hidden_layers"],
        d_model=d,
        n_heads=heads,
        variant=variant,
        norm_eps=config.get("norm_eps", 1e-6),
    )
    if variant == "fox_pro":
        fields["qk_norm_eps"] = QK_NORM_EPS
    if config.get("log_pruning_tolerance") is not None:
        fields["log_eps"] = config["log_pruning_tolerance"]
    hidden = _intermediate_size(config)
    base = ModelConfig(**{**fields, **overrides})
    # mlp_ratio is a float: take the first candidate whose SwiGLU width, rounded as FoxLM rounds it, is theirs.
    for ratio in (config.get("hidden_ratio"), hidden * 1.5 / d, math.nextafter(hidden * 1.5 / d, 0.0)):
        if ratio is not None and mlp_hidden(dataclasses.replace(base, mlp_ratio=ratio)) == hidden:
            return dataclasses.replace(base, mlp_ratio=ratio)
    raise OfficialCheckpointError(f"intermediate_size {hidden} is not a width FoxLM can make (a multiple of 256)")


def _intermediate_size(config: dict) -> int:
    if config.get("intermediate_size") is not None:
        return int(config["intermediate_size"])
    ratio = config.get("hidden_ratio") or 4
    width = int(config["hidden_size"] * ratio * 2 / 3)
    return 256 * ((width + 255) // 256)


Target = tuple[str, Callable[[Tensor], Tensor]]


def official_key_map(cfg: ModelConfig, *, shared_qk_norm: bool) -> dict[str, tuple[tuple[int, ...], list[Target]]]:
    """Their key -> (the shape it must have, [(FoxLM key, transform of their tensor), ...]).

    The fused SwiGLU weight feeds two FoxLM keys; shared QK-norm gains (D,) are tiled over the heads.
    """
    same: Callable[[Tensor], Tensor] = lambda t: t
    d, hidden, heads, hd = cfg.d_model, mlp_hidden(cfg), cfg.n_heads, cfg.head_dim
    with torch.device("meta"):  # shapes only, nothing allocated
        shapes = {k: tuple(v.shape) for k, v in FoxLM(cfg).state_dict().items()}
    mapping: dict[str, tuple[tuple[int, ...], list[Target]]] = {}

    def one(theirs: str, ours: str) -> None:
        mapping[theirs] = (shapes[ours], [(ours, same)])

    one("model.embeddings.weight", "embed.weight")
    one("model.norm.weight", "norm.weight")
    one("lm_head.weight", "lm_head.weight")
    for i in range(cfg.n_layers):
        theirs, ours = f"model.layers.{i}.", f"blocks.{i}."
        layer = {
            "attn_norm.weight": "attn_norm.weight",
            "mlp_norm.weight": "mlp_norm.weight",
            "attn.q_proj.weight": "attn.wq.weight",
            "attn.o_proj.weight": "attn.wo.weight",
            "attn.fgate_proj.weight": "attn.fgate.weight",
            "attn.fgate_proj.bias": "attn.fgate.bias",
            "mlp.down_proj.weight": "mlp.w_down.weight",
        }
        if cfg.pro:
            layer |= {
                "attn.k_proj.linear.weight": "attn.wk.weight",
                "attn.v_proj.linear.weight": "attn.wv.weight",
                "attn.k_proj.shift_proj.weight": "attn.k_shift.proj.weight",
                "attn.v_proj.shift_proj.weight": "attn.v_shift.proj.weight",
                "attn.ogate_proj.weight": "attn.wg.weight",
                "attn.output_norm.weight": "attn.o_norm.weight",
            }
            for key in ("q_norm", "k_norm"):
                target = f"{ours}attn.{key}.weight"
                if shared_qk_norm:
                    mapping[f"{theirs}attn.{key}.weight"] = ((hd,), [(target, lambda t: t.repeat(heads))])
                else:
                    layer[f"attn.{key}.weight"] = f"attn.{key}.weight"
        else:
            layer |= {"attn.k_proj.weight": "attn.wk.weight", "attn.v_proj.weight": "attn.wv.weight"}
        for key, target in layer.items():
            one(theirs + key, ours + target)
        mapping[theirs + "mlp.gate_proj.weight"] = (
            (2 * hidden, d),
            [(ours + "mlp.w_gate.weight", lambda t: t[:hidden]), (ours + "mlp.w_up.weight", lambda t: t[hidden:])],
        )
    return mapping


def convert_official_state(
    state: dict[str, Tensor], cfg: ModelConfig, *, shared_qk_norm: bool, tied: bool = False
) -> dict[str, Tensor]:
    """Their state dict -> FoxLM's. tied: lm_head.weight may be absent (it is the embedding).

    Raises:
        OfficialCheckpointError: unknown keys, missing keys or tensors of the wrong shape (all named).
    """
    mapping = official_key_map(cfg, shared_qk_norm=shared_qk_norm)
    state = dict(state)
    if tied and "lm_head.weight" not in state and "model.embeddings.weight" in state:
        state["lm_head.weight"] = state["model.embeddings.weight"]
    unknown = sorted(set(state) - set(mapping))
    missing = sorted(set(mapping) - set(state))
    if unknown or missing:
        raise OfficialCheckpointError(f"checkpoint keys do not fit the config: unknown {unknown}, missing {missing}")
    out = {}
    for key, (shape, targets) in mapping.items():
        tensor = state[key]
        if tuple(tensor.shape) != shape:
            raise OfficialCheckpointError(f"{key} has shape {tuple(tensor.shape)}, expected {shape}")
        for target, transform in targets:
            out[target] = transform(tensor).clone()
    return out


def read_official(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(config.json as a dict, state dict) of an official checkpoint directory, or, if ``path`` is no directory,
    of that Hugging Face Hub name (downloaded through huggingface_hub; needs the network).

    Weights: model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin.

    Raises:
        OfficialCheckpointError: no config.json or no weights file in the directory, or a local path (a Path, or
            a name that is absolute, relative with ./ or ~, or of more than two parts) that is no directory.
    """
    root = Path(path)
    if not root.is_dir():
        name = str(path)
        if isinstance(path, Path) or root.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
            raise OfficialCheckpointError(
                f"{name} is not a directory (nor a Hugging Face Hub name such as 'owner/name')"
            )
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors", "*.bin"]))
    if not (root / "config.json").exists():
        raise OfficialCheckpointError(f"{root} has no config.json")
    config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    index = root / "model.safetensors.index.json"
    if index.exists():
        state = {}
        for name in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(root / name))
    elif (root / "model.safetensors").exists():
        state = load_file(root / "model.safetensors")
    elif (root / "pytorch_model.bin").exists():
        state = torch.load(root / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise OfficialCheckpointError(
            f"{root} has no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)"
        )
    return config, state


def load_official(path: str | Path, **overrides) -> FoxLM:
    """A FoxLM (eval mode, float32 on the CPU) holding an official FoX checkpoint: a local directory or a hub name
    such as zhixuan-lin/fox-pro-760m-longcrawl64-48b. overrides go to the ModelConfig (acp, log_eps, attn_backend).

    Their QK-norm modules keep their own eps (1e-5) whatever config norm_eps says (the other norms use it): the
    ModelConfig carries both (qk_norm_eps, norm_eps), so a model saved from here loads back with the same eps.

    Raises:
        OfficialCheckpointError: an unsupported config, or weights that do not fit it (see convert_official_state).
    """
    config, state = read_official(path)
    cfg = official_model_config(config, **overrides)
    shared = bool(config.get("qk_norm_share_param_across_head", False))
    weights = convert_official_state(state, cfg, shared_qk_norm=shared, tied=bool(config.get("tie_word_embeddings")))
    model = FoxLM(cfg)
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    return model.eval()
