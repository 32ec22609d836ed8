"""The implementations the attention benchmark compares: one function per row, each returning a `Peer`.

A peer's `forward(*leaves)` runs the attention once and returns its output; `fwd` runs it on detached
leaves without autograd, `fwdbwd` runs it on the leaves and back-propagates a fixed output gradient. Peers that
take a head-first layout (SDPA, FlexAttention) get their own contiguous (B, H, T, D) copies of the
inputs, as their users would hold them. A peer that cannot run here raises `Unavailable`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..ops.acp import DEFAULT_LOG_EPS

TILE = 128  # FlexAttention's default sparse block size; the ACP block mask is built on this grid


class Unavailable(RuntimeError):
    """The peer cannot run on this machine or software stack; the message says why."""


@dataclass
class Inputs:
    """Benchmark inputs at one shape.

    q, k, v: bf16 (B, T, H, D) leaves requiring grad; log_fgate: fp32 (B, T, H) leaf requiring grad;
    do: bf16 (B, T, H, D) output gradient. qk_bound: U for ACP (None: derived from the data).
    """

    q: Tensor
    k: Tensor
    v: Tensor
    log_fgate: Tensor
    do: Tensor
    qk_bound: float | None
    log_eps: float = DEFAULT_LOG_EPS

    @property
    def leaves(self) -> list[Tensor]:
        return [self.q, self.k, self.v, self.log_fgate]


@dataclass
class Peer:
    """A row under test. `search` (ACP rows) runs the boundary search alone, for its time share."""

    forward: Callable[..., Tensor]
    leaves: list[Tensor]
    do: Tensor
    flop_saving: float | None = 0.0
    search: Callable[[], object] | None = None
    to_bthd: Callable[[Tensor], Tensor] = field(default=lambda o: o)

    def fwd(self) -> Tensor:
        with torch.no_grad():
            return self.forward(*(x.detach() for x in self.leaves))

    def fwdbwd(self) -> None:
        self.forward(*self.leaves).backward(self.do)

    def output(self) -> Tensor:
        """Forward output in the (B, T, H, D) layout, without autograd."""
        return self.to_bthd(self.fwd())


def _head_first(inp: Inputs) -> tuple[list[Tensor], Tensor]:
    """Contiguous (B, H, T, D) leaf copies of q, k, v and the matching output gradient."""
    leaves = [x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (inp.q, inp.k, inp.v)]
    return leaves, inp.do.transpose(1, 2).contiguous()


def _to_bthd(o: Tensor) -> Tensor:
    return o.transpose(1, 2)


def foxacp_exact(inp: Inputs, backend: str = "triton") -> Peer:
    """foxacp forgetting attention without pruning (log_eps=None)."""
    from foxacp import forgetting_attention

    def forward(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> Tensor:
        return forgetting_attention(q, k, v, g, log_eps=None, backend=backend)

    return Peer(forward, inp.leaves, inp.do, flop_saving=0.0)


def foxacp_acp(inp: Inputs, backend: str = "triton") -> Peer:
    """foxacp forgetting attention with ACP at log_eps (-10: eps = e^-10) and the given qk_bound."""
    from foxacp import forgetting_attention
    from foxacp.ops import prepare_search

    kw = {"log_eps": inp.log_eps, "qk_bound": inp.qk_bound}

    def forward(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> Tensor:
        return forgetting_attention(q, k, v, g, backend=backend, **kw)

    # The search share times the bound, the threshold and the tile boundaries: the work ACP adds to a call.
    search = prepare_search(inp.q, inp.k, inp.log_fgate, **kw)

    with torch.no_grad():
        _, stats = forgetting_attention(inp.q, inp.k, inp.v, inp.log_fgate, backend=backend, return_stats=True, **kw)
    return Peer(forward, inp.leaves, inp.do, flop_saving=float(stats.flop_saving), search=search)


def sdpa(inp: Inputs, backend_name: str) -> Peer:
    """Dense causal attention through torch SDPA restricted to one backend ("CUDNN_ATTENTION" or
    "FLASH_ATTENTION"). No forget gate: the dense baseline FoX has to beat."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name, None)
    if backend is None:
        raise Unavailable(f"SDPBackend.{backend_name} does not exist in torch {torch.__version__}")
    (q, k, v), do = _head_first(inp)

    def forward(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    return Peer(forward, [q, k, v], do, flop_saving=0.0, to_bthd=_to_bthd)


def _causal(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    # Module level, so every BlockMask carries the same mask_mod object (no recompiles).
    return q_idx >= kv_idx


def fox_block_mask(kv_lo: Tensor, seqlen: int, block: int = TILE):
    """A FlexAttention BlockMask for causal attention whose query block m visits key blocks kv_lo[..., m]
    through m: blocks kv_lo..m-1 as full blocks, the diagonal block m as a partial (causal) block.

    kv_lo: integer (B or 1, H or 1, seqlen // block) with 0 <= kv_lo[..., m] <= m (not checked: this
    runs inside the timed region, where a check would synchronise); kv_lo = 0 gives causal attention.
    Raises ValueError if seqlen is not a multiple of block or kv_lo has the wrong length.
    """
    from torch.nn.attention.flex_attention import BlockMask

    n = seqlen // block
    if seqlen % block or kv_lo.shape[-1] != n:
        raise ValueError(f"need seqlen % {block} == 0 and kv_lo (..., {n}), got {tuple(kv_lo.shape)}")
    kv_lo = kv_lo.to(torch.int32)
    blocks = torch.arange(n, device=kv_lo.device, dtype=torch.int32)
    full_num = blocks - kv_lo
    full_idx = (kv_lo.unsqueeze(-1) + blocks).clamp_(max=n - 1)
    diag_num = torch.ones_like(kv_lo)
    diag_idx = ((blocks.view(n, 1) + blocks) % n).expand(*kv_lo.shape, n).contiguous()
    return BlockMask.from_kv_blocks(
        diag_num,
        diag_idx,
        full_num.contiguous(),
        full_idx.contiguous(),
        BLOCK_SIZE=block,
        mask_mod=_causal,
    )


def _flex_fox(q: Tensor, k: Tensor, v: Tensor, log_fgate: Tensor, block_mask) -> Tensor:
    """FoX through FlexAttention: score + c[q_idx] - c[kv_idx]. q, k, v (B, H, T, D); log_fgate (B, T, H).

    The cumulative gate enters as two separate tensors, one indexed by q_idx and one by kv_idx:
    FlexAttention cannot index one tensor that requires grad twice in a score_mod.
    """
    from torch.nn.attention.flex_attention import flex_attention

    c_q = torch.cumsum(log_fgate, dim=1).transpose(1, 2).contiguous()
    c_k = c_q.clone()

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return score + c_q[b, h, q_idx] - c_k[b, h, kv_idx]

    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)


def flex_fox(inp: Inputs, acp: bool = False, compile: bool = True) -> Peer:
    """FoX through torch.compile'd FlexAttention with a causal block mask; with acp=True the block mask
    also skips the key blocks foxacp's ACP boundary search prunes (make_plan on a 128x128 grid). The ACP
    row rebuilds its plan and block mask on every call (the gates change every training step), so
    that work is part of its time and is timed alone as its search share."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError as e:
        raise Unavailable(f"FlexAttention not in torch {torch.__version__}: {e}") from e
    (q, k, v), do = _head_first(inp)
    g = inp.log_fgate
    seqlen = q.shape[2]
    fn = torch.compile(_flex_fox, dynamic=False) if compile else _flex_fox

    if acp:
        from foxacp.ops import make_plan

        def search():
            with torch.no_grad():
                plan = make_plan(inp.q, inp.k, g, log_eps=inp.log_eps, qk_bound=inp.qk_bound, tile_m=TILE, tile_n=TILE)
                return fox_block_mask(plan.kv_lo, seqlen), plan

        _, plan = search()
        saving = float(plan.stats.flop_saving)

        def forward(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> Tensor:
            return fn(q, k, v, g, search()[0])

        return Peer(forward, [q, k, v, g], do, saving, search=search, to_bthd=_to_bthd)

    # Shaped (B, H, ...) like the ACP mask, so both rows share one compiled graph per shape.
    causal_mask = fox_block_mask(q.new_zeros(*q.shape[:2], seqlen // TILE, dtype=torch.int32), seqlen)

    def forward(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> Tensor:
        return fn(q, k, v, g, causal_mask)

    return Peer(forward, [q, k, v, g], do, 0.0, to_bthd=_to_bthd)


def fla_fox(inp: Inputs) -> Peer:
    """fla's Triton forgetting attention (fla-core 0.6: fla.ops.forgetting_attn.parallel_forgetting_attn):
    (B, T, H, D) layout, g = per-token log forget gate (B, T, H) that fla sums itself, scale 1/sqrt(D)."""
    try:
        from fla.ops.forgetting_attn import parallel_forgetting_attn
    except Exception as e:  # any import failure means the peer is not available
        raise Unavailable(f"fla not importable: {type(e).__name__}: {e}") from e

    def forward(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> Tensor:
        return parallel_forgetting_attn(q, k, v, g)

    return Peer(forward, inp.leaves, inp.do, flop_saving=0.0)


# Row name -> constructor(inputs, foxacp backend, compile FlexAttention?), in report order.
PEERS: dict[str, Callable[[Inputs, str, bool], Peer]] = {
    "sdpa-cudnn": lambda inp, backend, compile: sdpa(inp, "CUDNN_ATTENTION"),
    "sdpa-flash": lambda inp, backend, compile: sdpa(inp, "FLASH_ATTENTION"),
    "foxacp-exact": lambda inp, backend, compile: foxacp_exact(inp, backend),
    "foxacp-acp": lambda inp, backend, compile: foxacp_acp(inp, backend),
    "flex-fox": lambda inp, backend, compile: flex_fox(inp, acp=False, compile=compile),
    "flex-fox-acp": lambda inp, backend, compile: flex_fox(inp, acp=True, compile=compile),
    "fla-fox": lambda inp, backend, compile: fla_fox(inp),
}


def qknorm_bound(head_dim: int) -> float:
    """U for QK-normed rows with unit gains and scale 1/sqrt(d): sqrt(d), as ||q|| <= sqrt(d) max|g| for an
    RMS-normed row."""
    return math.sqrt(head_dim)
