"""The decoder-only language model: embedding, pre-norm blocks, final norm, untied LM head."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from foxacp.ops.linear_ce import linear_cross_entropy
from foxacp.ops.skinny import skinny_linear
from foxacp.ops.validate import value_checks_on

from .attention import ForgettingAttention
from .cache import KVCache, LayerCache
from .config import ModelConfig, mlp_hidden
from .layers import HeadRMSNorm, RMSNorm, SwiGLU
from .paged import PagedKVCache

if TYPE_CHECKING:
    from foxacp.ops import AcpStats


GAINS_CHANGED = (
    "the model's QK-norm gains changed since this evicting cache was made: its logit bound, and so what it evicted, "
    "no longer holds; make a new cache (model.new_cache(..., evict=True))"
)


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)). x (B, T, d_model) -> same."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = ForgettingAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, mlp_hidden(cfg))

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        x = x + self.attn(self.attn_norm(x), pos, cu_seqlens, max_seqlen, cache)
        return x + self.mlp(self.mlp_norm(x))


RunBlock = Callable[[Block, Tensor, Tensor, LayerCache], Tensor]


def block_step(block: Block, x: Tensor, pos: Tensor, layer: LayerCache) -> Tensor:
    """One block's cached step: x (B, T, d_model) at positions pos (B, T), appended to ``layer``."""
    return block(x, pos, cache=layer)


def doc_positions(batch: int, seq_len: int, cu_seqlens: Tensor | None, device: torch.device) -> Tensor:
    """Position of every token within its sequence: (B, T) int.

    Without cu_seqlens each row is a sequence; with it (int32 (N+1,) offsets over the B*T flattened
    tokens) positions restart at every document start. Position 0 marks a start for the token shift.
    """
    if cu_seqlens is None:
        return torch.arange(seq_len, device=device).expand(batch, seq_len)
    flat = torch.arange(batch * seq_len, device=device, dtype=cu_seqlens.dtype)
    doc = torch.searchsorted(cu_seqlens, flat, right=True) - 1
    return (flat - cu_seqlens[doc]).view(batch, seq_len)


class FoxLM(nn.Module):
    """FoX (Pro) / LLaMA-style FoX / Transformer language model, chosen by ``config.variant``.

    ``blocks`` is an nn.ModuleList of ``Block`` so that a trainer can shard or checkpoint each block;
    the model itself knows nothing about distribution. Build on the meta device and call
    ``init_weights()`` after ``to_empty`` to materialise it elsewhere.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.fused = False  # inside ``fused_projections``
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Linear weights and the embedding N(0, init_std), biases 0 (b_f: fgate_bias_init), gains 1."""
        std = self.config.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, (RMSNorm, HeadRMSNorm)):
                nn.init.ones_(m.weight)
        for block in self.blocks:
            if block.attn.fgate is not None:
                nn.init.constant_(block.attn.fgate.bias, self.config.fgate_bias_init)

    def forward(
        self,
        input_ids: Tensor,
        *,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
        cache: KVCache | None = None,
        run_block: RunBlock | None = None,
        labels: Tensor | None = None,
        ignore_index: int = -100,
    ) -> Tensor:
        """input_ids (B, T) int64 -> logits (B, T, vocab_size), or with ``labels`` the per-token losses.

        cu_seqlens: int32 (N+1,) document offsets over the B*T flattened tokens (0 ... B*T); attention,
        token shift and RoPE then restart at every document and run across row ends. max_seqlen: the
        longest document (optional, passed to the attention op).
        cache: a ``new_cache`` of batch size B; input_ids are then each sequence's next T tokens: they are
        appended to the cache (T = 1 to decode, any T to prefill, in one call or in chunks) and the logits
        are those of the new tokens, as the full forward over the whole sequence would give them. A
        one-token step never rebases the cache's gate totals (no host read): when decoding by hand over
        thousands of tokens, call ``cache.rebase()`` now and then (every 16 tokens, as ``generate`` does)
        to keep the decays as precise as a prefill's (model/cache.py).
        run_block: with a cache, each block runs as run_block(block, x, pos, layer_cache) instead of
            block(x, pos, cache=layer_cache); ``generate(compile=True)`` passes ``run_block`` compiled by
            torch.compile, which traces one block once and replays that graph for every layer.
        labels: int64 (B, T) next tokens: returns the cross-entropy (B, T) float32 of every token instead of the
        logits, 0 where the label is ``ignore_index``, through ``foxacp.ops.linear_ce`` (the head and the loss
        in chunks: the (B, T, V) logits never exist). It runs inside forward so that a sharded head (FSDP)
        is gathered for it like every other layer.

        Raises:
            ValueError: a cache together with cu_seqlens, a cache of another batch size, or a sequence that
                would outgrow the cache (a host read; a one-token step skips it with value checks off, as in
                a CUDA graph, under torch.compile and in ``generate``: the caller then keeps lengths below
                max_len).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if cache is not None:
            if labels is not None:
                raise ValueError("labels cannot be combined with a cache: losses are for training and evaluation")
            return self._forward_cached(input_ids, cache, cu_seqlens, run_block or block_step)
        pos = doc_positions(B, T, cu_seqlens, input_ids.device)
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, pos, cu_seqlens, max_seqlen)
        if labels is not None:
            return linear_cross_entropy(self.norm(x), self.lm_head.weight, labels, ignore_index=ignore_index)
        return self.lm_head(self.norm(x))

    def new_cache(
        self,
        batch_size: int,
        max_len: int,
        *,
        evict: bool = False,
        pool_blocks: int | None = None,
        pool_fraction: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """An empty decoding cache for batch_size sequences of up to max_len tokens.

        evict=False: a full cache (model/cache.py). evict=True: a ``PagedKVCache`` (model/paged.py) that frees
        the 64-key blocks ACP skips for every later query, with pools of pool_blocks blocks per layer (default
        from pool_fraction of the full cache, see ``PagedKVCache.allocate_paged``). It is tied to the model's
        current QK-norm gains (its static bound) and ACP tolerance.
        dtype and device of K and V default to the model's (the gates are float32 whatever the dtype).
        Raises ValueError for a non-positive batch_size or max_len, bad pool sizes, or eviction on a model
        without QK-norm (its bound comes from the data and can grow with new keys, so a pruned key could be
        needed again) or without ACP (nothing is ever pruned).
        """
        cfg, weight = self.config, self.embed.weight
        shape = dict(
            batch_size=batch_size,
            max_len=max_len,
            n_heads=cfg.n_heads,
            kv_heads=cfg.kv_heads,
            head_dim=cfg.head_dim,
            token_shift=cfg.pro,
            dtype=dtype or weight.dtype,
            device=torch.device(device) if device is not None else weight.device,
        )
        if not evict:
            return KVCache.allocate(n_layers=cfg.n_layers, **shape)
        self.check_can_evict()
        bounds = [block.attn.qk_bound() for block in self.blocks]
        cache = PagedKVCache.allocate_paged(
            bounds=bounds, log_eps=cfg.attn_log_eps, pool_blocks=pool_blocks, pool_fraction=pool_fraction, **shape
        )
        cache.gains_stamp = self._gains_stamp()
        return cache

    def check_can_evict(self) -> None:
        """Raise ValueError unless this model can decode with an evicting cache (FoX Pro with ACP)."""
        cfg = self.config
        if not cfg.pro:
            raise ValueError(
                f"evict=True needs a static logit bound from QK-norm (variant 'fox_pro'), not {cfg.variant!r}: a bound "
                "derived from the data can grow with new keys, so a key pruned now could be needed later"
            )
        if cfg.attn_log_eps is None:
            raise ValueError("evict=True needs ACP (config.acp=True): exact attention never prunes a key")

    def _gains_stamp(self) -> tuple:
        """What changes when a QK-norm gain does (in place: a load, an optimizer step; or a new tensor): an evicting
        cache's static bound holds only for the gains it was made with. Host-only, no device read."""
        gains = [p for b in self.blocks for norm in (b.attn.q_norm, b.attn.k_norm) for p in norm.parameters()]
        return tuple((p._version, p.data_ptr()) for p in gains)

    def _check_paged_bound(self, cache: PagedKVCache) -> None:
        """Raise ValueError where a layer's static bound differs from the one ``cache`` evicts with: the gains may
        change without a new version (written through ``.data``), which the stamp misses. A device read, made only
        by calls that read back anyway."""
        now = torch.stack([block.attn.qk_bound().float() for block in self.blocks])
        if not torch.equal(now.to(cache.layers[0].u.device), torch.stack([layer.u for layer in cache.layers])):
            raise ValueError(GAINS_CHANGED)

    def _check_cache(self, cache: KVCache) -> None:
        """Raise ValueError for a cache made for another model: its layer count, heads, head dim or token-shift state
        differ (found from its first layer; host-only)."""
        cfg, layer = self.config, cache.layers[0]
        mine = (cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.pro)
        theirs = (
            len(cache.layers),
            layer.c_last.shape[1],
            layer.kv_heads,
            layer.k.shape[-1],
            layer.shift_k is not None,
        )
        if mine != theirs:
            names = "(layers, query heads, KV heads, head dim, token shift)"
            raise ValueError(f"the cache was made for another model: {names} = {theirs}, this model has {mine}")

    def _forward_cached(self, input_ids: Tensor, cache: KVCache, cu_seqlens: Tensor | None, run: RunBlock) -> Tensor:
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be (B, T) with T >= 1 new tokens, got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if cu_seqlens is not None:
            raise ValueError("cu_seqlens cannot be combined with a cache: give each sequence its own cache row")
        if cache.batch_size != B:
            raise ValueError(f"input_ids has batch size {B} but the cache has {cache.batch_size}")
        if cache.interrupted:
            raise ValueError(
                "a one-token step on this cache raised part-way (an error or an interrupt) and left some layers "
                "ahead of the others: reset() it, or restore() a snapshot taken before"
            )
        self._check_cache(cache)
        if isinstance(cache, PagedKVCache) and cache.gains_stamp not in (None, self._gains_stamp()):
            raise ValueError(GAINS_CHANGED)
        paged_prepare = isinstance(cache, PagedKVCache) and (T > 1 or cache.auto_prepare)
        # A host read: with value checks off (a CUDA graph, torch.compile, generate's steps) one-token steps skip it.
        checked = T > 1 or paged_prepare or value_checks_on()
        if checked and (longest := int(cache.lengths.max())) + T > cache.max_len:
            raise ValueError(f"input_ids: {T} more tokens after {longest} exceed the cache's max_len ({cache.max_len})")
        if checked and isinstance(cache, PagedKVCache):
            self._check_paged_bound(cache)
            if not paged_prepare:
                cache.check_reserved(T)
        if paged_prepare:
            cache.prepare(T)  # free what ACP passed, hold the blocks the new tokens go to (host reads)
        pos = cache.lengths[:, None].long() + torch.arange(T, device=input_ids.device)
        # Each layer moves its gate total and token-shift rows as it runs, the lengths only after the last: a call
        # that raises part-way must not leave that state behind, or a retry computes wrong logits. A checked call
        # (it reads back already) undoes it from a snapshot; an unchecked step (a graph's or a compiled loop's,
        # which must stay free of extra copies) marks the cache, and its next use refuses it.
        saved = cache.snapshot() if checked else None
        try:
            x = self.embed(input_ids)
            for block, layer in zip(self.blocks, cache.layers, strict=True):
                x = run(block, x, pos, layer)
            cache.lengths.add_(T)
        except BaseException:
            if saved is not None:
                cache.restore(saved)
            else:
                cache.interrupted = True
            raise
        if checked:  # this call reads back already: keep the gates near their anchor (model/cache.py says why)
            cache.rebase()
        h = self.norm(x)
        return skinny_linear(h, self.lm_head.weight) if self.fused else self.lm_head(h)

    @contextlib.contextmanager
    def fused_projections(self) -> Iterator[None]:
        """Within it, each block computes its projections of x as one GEMM with a stacked copy of their weights
        (W_q, W_k, W_v, W_g, the token shifts' W_a; the MLP's W_gate and W_up): a decode step is bound by its
        many small GEMMs (experiment 049). The copies are made on entry and dropped on exit, so they never
        go stale; no gradient flows through them (``generate`` decodes inside it). Calls of a few rows (a decode
        step) run every GEMM, W_o, W_down and the LM head included, on the few-row kernel (``skinny_linear``).
        FoX Pro's static ACP bound is computed once on entry too, not from the gains at every step.
        """
        self.fused = True
        for block in self.blocks:
            block.attn.fused_in = torch.cat([p.weight for p in block.attn.projections()]).detach()
            block.mlp.fused_in = torch.cat([block.mlp.w_gate.weight, block.mlp.w_up.weight]).detach()
            block.attn.fixed_bound = block.attn.qk_bound() if self.config.pro else None
        try:
            yield
        finally:
            self.fused = False
            for block in self.blocks:
                block.attn.fused_in = block.mlp.fused_in = block.attn.fixed_bound = None

    def acp_stats(self) -> list[AcpStats | None]:
        """Per layer, the AcpStats of the last forward (None unless config.record_acp_stats)."""
        return [block.attn.last_stats for block in self.blocks]

    @torch.no_grad()
    def forget_gates(
        self,
        input_ids: Tensor,
        *,
        cu_seqlens: Tensor | None = None,
        max_seqlen: int | None = None,
    ) -> Tensor:
        """Log forget gates of every layer: input_ids (B, T) -> (n_layers, B, T, n_heads) float32.

        All zeros for the transformer variant. Runs the blocks' submodules directly, so call it on an
        unsharded model.
        """
        B, T = input_ids.shape
        pos = doc_positions(B, T, cu_seqlens, input_ids.device)
        x = self.embed(input_ids)
        gates = []
        for i, block in enumerate(self.blocks):
            gates.append(block.attn.log_fgate(block.attn_norm(x)))
            if i + 1 < len(self.blocks):
                x = block(x, pos, cu_seqlens, max_seqlen)
        return torch.stack(gates)
