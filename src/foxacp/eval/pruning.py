"""Where ACP prunes in a trained model: per layer the log gates, q and k of one document, and the boundary search
(``foxacp.ops.make_plan``) on them at any log eps and tile size.

    layers = attention_inputs(model, ids)                       # one LayerInputs per layer
    plan = layer_plan(layers[0], log_eps=-10.0, tile=64)        # AcpPlan: kv_lo, per-head stats
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from foxacp.model import FoxLM
from foxacp.ops import AcpPlan, make_plan


@dataclass
class LayerInputs:
    """What the boundary search of one layer sees for one sequence.

    log_fgate (1, T, Hq) float32; q (1, T, Hq, D), k (1, T, Hkv, D) as the op gets them when ``qk_bound`` is None
    (the bound then comes from their norms); with a static ``qk_bound`` (Hq,) (FoX Pro's QK-norm bound) q and k
    only give the shapes. sm_scale: the layer's softmax scale.
    """

    log_fgate: Tensor
    q: Tensor
    k: Tensor
    qk_bound: Tensor | None
    sm_scale: float

    def decay(self, head: int, step: int = 1) -> Tensor:
        """The decay map D_ij = c_i - c_j float64 of query head ``head`` at every ``step``-th row and column
        (ceil(T / step) squared: a drawn map never holds the whole T x T), -inf above the diagonal."""
        c = self.log_fgate[0, :, head].double().cumsum(0)[::step]
        d = c[:, None] - c[None, :]
        return d.masked_fill(torch.ones_like(d, dtype=torch.bool).triu(1), -torch.inf)


@torch.no_grad()
def attention_inputs(model: FoxLM, input_ids: Tensor) -> list[LayerInputs]:
    """Each layer's boundary-search inputs on ``input_ids`` (1, T) int64 (one document).

    The gates come from ``model.forget_gates``; without QK-norm ("fox") q and k are the outputs of W_q and W_k,
    caught by forward hooks during one forward (no rotary or norm sits between them and the op in that variant).

    Raises ValueError for the transformer variant (no forget gate, nothing to prune) or input_ids not (1, T).
    """
    cfg = model.config
    if not cfg.has_fgate:
        raise ValueError(f"the {cfg.variant!r} variant has no forget gate: ACP has nothing to prune")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must be (1, T), got shape {tuple(input_ids.shape)}")
    model.eval()
    gates = model.forget_gates(input_ids)  # (L, 1, T, Hq)
    T = input_ids.shape[1]
    caught: dict[tuple[int, str], Tensor] = {}
    hooks = []
    if not cfg.pro:
        for i, block in enumerate(model.blocks):
            for name in ("wq", "wk"):
                hook = getattr(block.attn, name).register_forward_hook(
                    lambda _m, _a, out, key=(i, name): caught.__setitem__(key, out.detach())
                )
                hooks.append(hook)
        try:
            model(input_ids)
        finally:
            for hook in hooks:
                hook.remove()
    out = []
    for i, block in enumerate(model.blocks):
        if cfg.pro:
            q = gates.new_zeros(1, T, cfg.n_heads, cfg.head_dim)
            k = gates.new_zeros(1, T, cfg.kv_heads, cfg.head_dim)
            bound = block.attn.qk_bound().float()
        else:
            q = caught[(i, "wq")].float().view(1, T, cfg.n_heads, cfg.head_dim)
            k = caught[(i, "wk")].float().view(1, T, cfg.kv_heads, cfg.head_dim)
            bound = None
        out.append(LayerInputs(gates[i].float(), q, k, bound, cfg.head_dim**-0.5))
    return out


def check_log_eps(log_eps: float) -> None:
    """Raise ValueError unless log_eps < 0 (NaN included): eps = e^log_eps must be below 1."""
    if not log_eps < 0:
        raise ValueError(f"log_eps must be negative, got {log_eps}")


def layer_plan(layer: LayerInputs, *, log_eps: float, tile: int | tuple[int, int]) -> AcpPlan:
    """The ACP plan of one layer at ``log_eps`` on ``tile`` (square) or (tile_m, tile_n) tiles.

    Raises ValueError for a non-negative log_eps or a tile size < 1."""
    tm, tn = (tile, tile) if isinstance(tile, int) else tile
    if tm < 1 or tn < 1:
        raise ValueError(f"tile sizes must be >= 1, got {tile!r}")
    check_log_eps(log_eps)
    return make_plan(
        layer.q,
        layer.k,
        layer.log_fgate,
        sm_scale=layer.sm_scale,
        log_eps=log_eps,
        qk_bound=layer.qk_bound,
        tile_m=tm,
        tile_n=tn,
    )


def head_savings(layers: list[LayerInputs], *, log_eps: float, tile: int | tuple[int, int]) -> Tensor:
    """FLOP saving (share of causal tiles skipped) of every head: (L, Hq) float64."""
    return torch.stack([layer_plan(x, log_eps=log_eps, tile=tile).stats.per_head_saving for x in layers])


def total_saving(layers: list[LayerInputs], *, log_eps: float, tile: int | tuple[int, int]) -> float:
    """The saving of all layers and heads together: 1 - visited / causal tiles."""
    visited = causal = 0
    for x in layers:
        s = layer_plan(x, log_eps=log_eps, tile=tile).stats
        visited += int(s.tiles_visited.sum())
        causal += int(s.tiles_causal.sum())
    return 1.0 - visited / causal if causal else 0.0
