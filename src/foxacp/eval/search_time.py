"""The boundary search's share of attention time, per layer of a trained model (``foxacp analyze`` on a GPU).

ACP pays for its skipped tiles with a search (bound, threshold, tile boundaries) before every forward. This
times the search alone (``foxacp.ops.prepare_search``) and the ACP attention it serves, forward and forward +
backward, on each layer's own gates, and reports the search's share of each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

import foxacp
from foxacp.ops import prepare_search

from .pruning import LayerInputs

Bench = Callable[[Callable[[], object]], float]  # fn -> milliseconds


def cuda_median_ms(fn: Callable[[], object]) -> float:
    """triton.testing.do_bench's median (ms) on the current CUDA device."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=100, rep=200, return_mode="median"))


def search_share(
    layers: Sequence[LayerInputs], *, log_eps: float, dtype: torch.dtype, bench: Bench = cuda_median_ms
) -> dict[str, Any]:
    """Per layer: ms of the search, of the ACP attention forward and of forward + backward, and the search's share
    of each (search / attention time, which includes it). q, k take ``dtype`` (their values: the layer's, or for
    FoX Pro zeros, whose static bound makes the plan independent of them); v is random.

    Returns {"search_ms", "forward_ms", "fwd_bwd_ms", "share_forward", "share_fwd_bwd"}: lists over layers, plus
    the shares of the summed times under "total_share_forward" and "total_share_fwd_bwd".
    """
    rows: dict[str, list[float]] = {k: [] for k in ("search_ms", "forward_ms", "fwd_bwd_ms")}
    gen = torch.Generator(device=layers[0].q.device).manual_seed(0)
    for x in layers:
        for key, ms in zip(rows, _layer_times(x, log_eps, dtype, gen, bench), strict=True):
            rows[key].append(ms)
    out: dict[str, Any] = dict(rows)
    for name, key in (("forward", "forward_ms"), ("fwd_bwd", "fwd_bwd_ms")):
        out[f"share_{name}"] = [s / t for s, t in zip(rows["search_ms"], rows[key], strict=True)]
        out[f"total_share_{name}"] = sum(rows["search_ms"]) / sum(rows[key])
    return out


def _layer_times(
    x: LayerInputs, log_eps: float, dtype: torch.dtype, gen: torch.Generator, bench: Bench
) -> tuple[float, float, float]:
    """(search, forward, forward + backward) ms of one layer."""
    q, k = x.q.to(dtype), x.k.to(dtype)
    v = torch.randn(k.shape, generator=gen, device=k.device).to(dtype)
    kw = dict(sm_scale=x.sm_scale, log_eps=log_eps, qk_bound=x.qk_bound)
    grads = [t.clone().requires_grad_() for t in (q, k, v, x.log_fgate)]

    def forward() -> object:
        with torch.no_grad():
            return foxacp.forgetting_attention(q, k, v, x.log_fgate, **kw)

    def fwd_bwd() -> None:
        foxacp.forgetting_attention(*grads, **kw).sum().backward()

    return bench(prepare_search(q, k, x.log_fgate, **kw)), bench(forward), bench(fwd_bwd)
