"""The attention layer of the three variants: FoX Pro, LLaMA-style FoX, and the RoPE Transformer."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foxacp.ops import forgetting_attention, forgetting_attention_with_kvcache
from foxacp.ops.kvcache import DECODE_BACKENDS
from foxacp.ops.skinny import MAX_ROWS, skinny_linear

from .cache import REBASE_AT, LayerCache
from .config import ModelConfig
from .layers import HeadRMSNorm, TokenShift, apply_rope
from .paged import PagedLayerCache

if TYPE_CHECKING:
    from foxacp.ops import AcpStats

# New tokens per call up to which the cache path runs the decode op (beyond: the training op).
DECODE_MAX_Q = 16
PAGED_CHUNK = 64  # new tokens per paged-op call: a prefill chunk's float32 c stays near its anchor (experiment 059)


class ForgettingAttention(nn.Module):
    """Multi-head (optionally grouped-query) forgetting attention, the variant set by ``cfg.variant``.

    fox_pro:     q = norm_q(W_q x); k = norm_k(shift_k(W_k x)); v = shift_v(W_v x);
                 o = W_o(norm_o(attn(q, k, v, log f)) * sigmoid(W_g x)), log f = logsigmoid(W_f x + b_f)
    fox:         o = W_o(attn(W_q x, W_k x, W_v x, log f))
    transformer: o = W_o(attn(rope(W_q x), rope(W_k x), W_v x, 0)), exact (no pruning)

    The token shift runs per key/value head. ``last_stats`` holds the AcpStats of the last forward when
    ``cfg.record_acp_stats`` is set.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, hq, hkv, hd = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(d, hq * hd, bias=False)
        self.wk = nn.Linear(d, hkv * hd, bias=False)
        self.wv = nn.Linear(d, hkv * hd, bias=False)
        self.wo = nn.Linear(hq * hd, d, bias=False)
        self.fgate = nn.Linear(d, hq, bias=True) if cfg.has_fgate else None
        if cfg.pro:
            self.k_shift = TokenShift(d, hkv)
            self.v_shift = TokenShift(d, hkv)
            qk_eps = cfg.norm_eps if cfg.qk_norm_eps is None else cfg.qk_norm_eps
            self.q_norm = HeadRMSNorm(hq, hd, qk_eps)
            self.k_norm = HeadRMSNorm(hkv, hd, qk_eps)
            self.o_norm = HeadRMSNorm(hq, hd, cfg.norm_eps)
            self.wg = nn.Linear(d, hq * hd, bias=False)
        self.last_stats: AcpStats | None = None
        self.fused_in: Tensor | None = None  # the stacked weights of ``projections`` (``FoxLM.fused_projections``)
        self.fixed_bound: Tensor | None = None  # ``qk_bound()`` while the gains cannot change (``fused_projections``)

    def projections(self) -> list[nn.Linear]:
        """The bias-free projections of x, in the order a fused weight stacks them: W_q, W_k, W_v, and for
        FoX Pro W_g and the token shifts' W_a (k, then v)."""
        pro = [self.wg, self.k_shift.proj, self.v_shift.proj] if self.cfg.pro else []
        return [self.wq, self.wk, self.wv, *pro]

    def _project(self, x: Tensor) -> list[Tensor]:
        """x (B, T, d) -> the outputs of ``projections``: one GEMM on the fused weight when set (the few-row
        kernel where it applies, ``skinny_linear``; W_o too), else one each."""
        if self.fused_in is None:
            return [proj(x) for proj in self.projections()]
        sizes = [p.out_features for p in self.projections()]
        return list(skinny_linear(x, self.fused_in).split(sizes, dim=-1))

    def log_fgate(self, x: Tensor) -> Tensor:
        """log f = logsigmoid(W_f x + b_f) in fp32 (zeros for the transformer). x (B, T, d) -> (B, T, Hq)."""
        if self.fgate is None:
            return x.new_zeros(*x.shape[:-1], self.cfg.n_heads, dtype=torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            w, b = self.fgate.weight.float(), self.fgate.bias.float()
            if self.fused_in is not None and x.numel() // x.shape[-1] <= MAX_ROWS:
                # A decode step (compiled): written as a sum of products, the product, the bias and the logsigmoid
                # can become one Inductor kernel instead of cuBLAS's two-kernel GEMV and an elementwise one
                # (experiment 049's profile: the GEMV's two took 77 us of a 1568 us step). The same float32 math.
                return F.logsigmoid((x.float().unsqueeze(-2) * w).sum(-1) + b)
            return F.logsigmoid(F.linear(x.float(), w, b))

    @torch.no_grad()
    def qk_bound(self) -> Tensor:
        """Static ACP bound U >= |q.k| / sqrt(D) per query head, from the QK-norm gains. (Hq,) float32.

        ||norm(q)|| <= sqrt(D) * max|g_q| (likewise k), so U = sqrt(D) * max|g_q| * max|g_k|, times
        ``cfg.qk_bound_safety`` for bf16 rounding; query head h uses k-gains of kv head h // group.
        """
        g_q = self.q_norm.gains().detach().float().abs().amax(-1)
        g_k = self.k_norm.gains().detach().float().abs().amax(-1)
        g_k = g_k.repeat_interleave(self.cfg.n_heads // self.cfg.kv_heads)
        return self.cfg.qk_bound_safety * math.sqrt(self.cfg.head_dim) * g_q * g_k

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
        cache: LayerCache | PagedLayerCache | None = None,
    ) -> Tensor:
        """x (B, T, d_model), pos (B, T) position within its document -> (B, T, d_model).

        With cu_seqlens (int32 (N+1,), offsets over the B*T flattened tokens) attention runs on one row
        of B*T tokens, restarting at every document. With a layer cache, x holds each sequence's next T
        tokens at positions pos (its cached length onwards): they are written into the cache and attend to
        everything cached before them.
        """
        cfg = self.cfg
        B, T, d = x.shape
        if cu_seqlens is not None:
            x, pos = x.reshape(1, B * T, d), pos.reshape(1, B * T)
        b, t = x.shape[:2]
        q, k, v, *pro = self._project(x)
        q = q.view(b, t, cfg.n_heads, cfg.head_dim)
        k = k.view(b, t, cfg.kv_heads, cfg.head_dim)
        v = v.view(b, t, cfg.kv_heads, cfg.head_dim)
        qk_bound = None
        if cfg.pro:
            g, a_k, a_v = pro
            k_before, v_before = (None, None) if cache is None else (cache.shift_k, cache.shift_v)
            k_last, v_last = k[:, -1], v[:, -1]
            k, v = self.k_shift(x, k, pos, k_before, a_k), self.v_shift(x, v, pos, v_before, a_v)
            if cache is not None:  # the next call's shift needs this call's last rows, before the shift
                cache.shift_k.copy_(k_last)
                cache.shift_v.copy_(v_last)
            q, k = self.q_norm(q), self.k_norm(k)
            qk_bound = self.qk_bound() if self.fixed_bound is None else self.fixed_bound
        elif cfg.variant == "transformer":
            q, k = apply_rope(q, pos, cfg.rope_base), apply_rope(k, pos, cfg.rope_base)

        op_args = dict(
            sm_scale=cfg.head_dim**-0.5,
            log_eps=cfg.attn_log_eps,
            qk_bound=qk_bound,
            return_stats=cfg.record_acp_stats,
            backend=cfg.attn_backend,
        )
        if cache is None:
            o = forgetting_attention(
                q, k, v, self.log_fgate(x), cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, **op_args
            )
        else:
            log_fgate = self.log_fgate(x)
            gates = None
            if isinstance(cache, LayerCache) and t > DECODE_MAX_Q:
                # The training op's gates: the cached keys' as differences of c read before the write (whose
                # rebase moves c by the chunk's whole decay, rounding it there), the new keys' exactly.
                gates = (torch.diff(cache.c, dim=1, prepend=cache.c[:, :1]), log_fgate)
            rebase_at = REBASE_AT if t > 1 else None
            if isinstance(cache, PagedLayerCache) and t > PAGED_CHUNK:
                # The paged op reads the chunk's own c from the pool, anchored at its end: over a long chunk,
                # float32 would round the early queries' decays (experiment 059). Short pieces keep it near.
                parts, piece_args = [], {**op_args, "return_stats": False}  # the paged op keeps no stats
                for s in range(0, t, PAGED_CHUNK):
                    i = slice(s, s + PAGED_CHUNK)
                    cache.write(pos[:, i], k[:, i], v[:, i], log_fgate[:, i], rebase_at=rebase_at)
                    parts.append(cached_attention(q[:, i], cache, pos[:, i][:, -1] + 1, None, **piece_args))
                o = (torch.cat(parts, 1), None) if op_args["return_stats"] else torch.cat(parts, 1)
            else:
                cache.write(pos, k, v, log_fgate, rebase_at=rebase_at)
                o = cached_attention(q, cache, pos[:, -1] + 1, gates, **op_args)
        if cfg.record_acp_stats:
            o, self.last_stats = o
        if cfg.pro:
            o = self.o_norm(o) * torch.sigmoid(g).view_as(o)
        o = o.reshape(b, t, -1)
        o = self.wo(o) if self.fused_in is None else skinny_linear(o, self.wo.weight)
        return o.view(B, T, d)


def cached_attention(
    q: Tensor,
    cache: LayerCache | PagedLayerCache,
    seqlens: Tensor,
    gates: tuple[Tensor, Tensor] | None = None,
    **op_args,
):
    """Attention of the new queries q (B, Tq, Hq, D) to the first seqlens[b] (B,) cached keys of each row.

    Up to DECODE_MAX_Q queries run the decode op, which reads the cached c and handles rows of different
    lengths in one call without reading anything back to the host (a decode step captures in a CUDA graph).
    Longer chunks run the training op with queries aligned to the end of the keys, on the whole batch when
    every row has the same length, else row by row (this reads the lengths back); it takes log forget
    gates: ``gates`` = (earlier keys' (B, >= seqlens - Tq, Hq), the new keys' (B, Tq, Hq)) where given, else
    differences of the cached c (the first set to 0: only differences matter). Long chunks want the former:
    the cached c of a chunk spans its whole decay in float32 (experiments/055-long-chunk-prefill-precision).
    ``op_args`` go to the op; with return_stats, the stats are those of the last call. A paged (evicting)
    cache runs its own op for any number of new tokens, with its own static bound and threshold.
    """
    want_stats = op_args["return_stats"]
    q_dtype, q = q.dtype, q.to(cache.k.dtype)  # under autocast q may be narrower than the cache
    if isinstance(cache, PagedLayerCache):  # any number of new tokens: the paged op (no stats)
        backend = op_args["backend"] if op_args["backend"] in DECODE_BACKENDS else None
        o = cache.attend(q, seqlens.to(torch.int32), sm_scale=op_args["sm_scale"], backend=backend).to(q_dtype)
        return (o, None) if want_stats else o
    if q.shape[1] <= DECODE_MAX_Q:
        backend = op_args.pop("backend")
        backend = backend if backend in DECODE_BACKENDS else None
        out = forgetting_attention_with_kvcache(
            q, cache.k, cache.v, cache.c, seqlens.to(torch.int32), backend=backend, **op_args
        )
        o, stats = out if want_stats else (out, None)
    else:
        lens = seqlens.tolist()
        spans = [(0, len(lens))] if len(set(lens)) == 1 else [(i, i + 1) for i in range(len(lens))]
        outs = []
        for lo, hi in spans:
            n = lens[lo]
            if gates is None:
                c = cache.c[lo:hi, :n]
                log_fgate = torch.diff(c, dim=1, prepend=c[:, :1])
            else:
                log_fgate = torch.cat([gates[0][lo:hi, : n - q.shape[1]], gates[1][lo:hi]], dim=1)
            out = forgetting_attention(q[lo:hi], cache.k[lo:hi, :n], cache.v[lo:hi, :n], log_fgate, **op_args)
            o, stats = out if want_stats else (out, None)
            outs.append(o)
        o = outs[0] if len(outs) == 1 else torch.cat(outs)
    return (o.to(q_dtype), stats) if want_stats else o.to(q_dtype)
