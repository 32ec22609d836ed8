"""The evicting decoding cache: a pool of 64-key blocks per layer, a block table and a start per (sequence, KV head).

Why eviction is safe (method.md section 6). The cache fixes L_max (its max_len) and takes the static logit
bound U of the QK-norm gains, so the ACP threshold delta = -2U - log(L_max) + log(eps) of every query head
is one number for the cache's life. Decay only grows with the query (c is non-increasing), so a block whose
decay to the newest query of a head is below delta stays below it for every later query: ACP would skip it
forever. A KV head frees a block once every query head of its group has passed it: its start pointer is the
earliest ACP start among them. The paged decode op (ops/paged.py) reads from that start, with the same
threshold, so freeing changes nothing that ACP had not already dropped, and each row's dropped mass stays
within the eps bound. With a bound derived from the data, U (hence delta) could change with new keys, so a
cache without a static bound refuses to evict (``FoxLM.new_cache``).

When blocks move. Taking and freeing blocks happens on the host, in ``prepare(ahead)``: it reads the lengths
once, frees the blocks wholly before each KV head's start (one device pass over the block-end gates, one
read of the new starts), and reserves the blocks the next ``ahead`` tokens of each sequence will be written
to. A forward of more than one token calls it itself (a prefill chunk: so a long prompt fed in chunks is
evicted between chunks and its full cache is never resident); a one-token step calls it too unless
``auto_prepare`` is off, which ``generate`` does to keep the step free of host reads (a CUDA graph): it
calls ``prepare(CHECK_EVERY)`` itself every CHECK_EVERY tokens, when it also rebases. Running out of blocks
raises ``CachePoolExhausted`` in ``prepare``, before anything is written: never a wrong answer. A step that
reads back anyway (value checks on) refuses to write past the held blocks (``check_reserved``) and checks that
the model's static bound is still the one the cache evicts with.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

from foxacp.ops.kvcache import DECODE_BLOCK
from foxacp.ops.paged import forgetting_attention_with_paged_kvcache, paged_threshold

from .cache import KVCache, check_cache_dtype, positive_int

BLOCK = DECODE_BLOCK  # keys per block: the decode op's ACP block, so a block is freed exactly when ACP skips it
DEFAULT_POOL_FRACTION = 0.5  # of the full cache's blocks, per layer, plus one block per (sequence, KV head)


class CachePoolExhausted(ValueError):
    """A layer's block pool has no free block left for the tokens about to be written (pool_blocks or
    pool_fraction was too small): a ValueError, as the size argument is what to change."""


@dataclass
class BlockPool:
    """One layer's block storage, shared by every row view of the cache.

    k, v: (P + 1, BLOCK, D) in the cache dtype; c: (P + 1, BLOCK, group) float32. Block P is scratch: the
    table entries of blocks not held point at it (the op never reads them). owner: (P + 1,) int64 on the
    device, row * Hkv + kv head of a held block, ``n_owners`` for a free one (rebasing shifts by owner).
    free: (P,) int64 on the host, a stack whose first ``n_free`` entries are the free blocks. given: how many
    blocks were ever given back (it only grows: ``restore`` refuses a snapshot taken before a return).
    """

    k: Tensor
    v: Tensor
    c: Tensor
    owner: Tensor
    free: Tensor
    n_free: int
    n_owners: int
    given: int = 0

    @property
    def capacity(self) -> int:
        return self.free.shape[0]

    def take(self, n: int, layer: int) -> Tensor:
        """n free block ids (host int64); raises CachePoolExhausted, taking nothing, when fewer are free."""
        if n > self.n_free:
            raise CachePoolExhausted(
                f"layer {layer}: the KV block pool is exhausted ({n} blocks needed, {self.n_free} free of "
                f"{self.capacity}); create the cache with a larger pool_blocks or pool_fraction"
            )
        self.n_free -= n
        return self.free[self.n_free : self.n_free + n].clone()

    def give(self, ids: Tensor) -> None:
        """Return block ids (host int64) to the pool."""
        self.free[self.n_free : self.n_free + ids.numel()] = ids
        self.n_free += ids.numel()
        self.given += ids.numel()


@dataclass
class PagedLayerCache:
    """One layer of the evicting cache, over rows row0 .. row0 + B of its pool's owners (views for ``rows``).

    table: (B, Hkv, blocks) int32 on the device and table_host its host copy: the pool block of each
    logical block. start, start_host: (B, Hkv) int32, the first held logical block. top: (B,) int64 host,
    the logical blocks reserved so far (the same for every KV head of a row). c_last, shifted, shift_k,
    shift_v: as in ``LayerCache``. u: (Hq,) the static bound; delta: (Hq,) float32 the fixed threshold
    (``paged_threshold``).
    """

    pool: BlockPool
    row0: int
    table: Tensor
    table_host: Tensor
    start: Tensor
    start_host: Tensor
    top: Tensor
    c_last: Tensor
    shifted: Tensor
    shift_k: Tensor | None
    shift_v: Tensor | None
    u: Tensor
    log_eps: float
    delta: Tensor
    max_len: int
    index: int

    @property
    def k(self) -> Tensor:  # the dtype and device of the cache, as ``LayerCache.k`` gives them
        return self.pool.k

    @property
    def kv_heads(self) -> int:
        return self.table.shape[1]

    def rows(self, start: int, stop: int) -> PagedLayerCache:
        """A view of rows start:stop (the pool is shared)."""
        views = {n: getattr(self, n)[start:stop] for n in ("table", "table_host", "start", "start_host", "top")}
        views |= {n: None if getattr(self, n) is None else getattr(self, n)[start:stop] for n in _ROW_STATE}
        return PagedLayerCache(**{**self.__dict__, **views, "row0": self.row0 + start})

    def _blocks(self, pos: Tensor) -> Tensor:
        """Pool block of each (row, position, KV head): pos (B, T) -> (B, T, Hkv) int64."""
        B, Hkv = self.start.shape
        rows = torch.arange(B, device=pos.device)[:, None, None]
        heads = torch.arange(Hkv, device=pos.device)[None, None, :]
        return self.table[rows, heads, (pos // BLOCK)[:, :, None]].long()

    def write(self, pos: Tensor, k: Tensor, v: Tensor, log_fgate: Tensor, *, rebase_at: float | None) -> None:
        """``LayerCache.write`` through the block table (the blocks must be reserved: ``prepare``)."""
        blocks, slot = self._blocks(pos), (pos % BLOCK)[:, :, None]
        self.pool.k[blocks, slot] = k.to(self.pool.k.dtype)
        self.pool.v[blocks, slot] = v.to(self.pool.v.dtype)
        steps = log_fgate.to(torch.float64).cumsum(1)
        if rebase_at is not None:
            self.rebase(rebase_at, pos[:, 0], self.c_last + steps[:, -1])
        c = self.c_last[:, None] + steps
        B, T, Hkv = blocks.shape
        self.pool.c[blocks, slot] = c.to(torch.float32).view(B, T, Hkv, -1)
        self.c_last.copy_(c[:, -1])

    def last_c(self, lengths: Tensor) -> Tensor:
        """The stored float32 c of each row's last cached position: (B, Hq) (0 for an empty row)."""
        last = (lengths.long() - 1).clamp(min=0)[:, None]
        B = last.shape[0]
        stored = self.pool.c[self._blocks(last)[:, 0], last % BLOCK].reshape(B, -1)
        return torch.where(lengths[:, None] > 0, stored, 0.0)

    def rebase(self, threshold: float, lengths: Tensor, target: Tensor | None = None) -> None:
        """``LayerCache.rebase`` on the held blocks: each block is shifted by its owner's constant."""
        target = self.c_last if target is None else target
        shift = torch.where(target.abs() > threshold, target.trunc(), 0.0)
        B, Hkv = self.start.shape
        by_owner = torch.zeros(self.pool.n_owners + 1, shift.shape[1] // Hkv, device=shift.device)
        by_owner[self.row0 * Hkv : (self.row0 + B) * Hkv] = shift.float().view(B * Hkv, -1)
        self.pool.c.sub_(by_owner[self.pool.owner][:, None, :])
        self.shifted.add_(shift)
        stored = self.last_c(lengths).to(torch.float64)
        moved = (shift != 0) & (lengths[:, None] > 0)
        self.c_last.copy_(torch.where(moved, stored, self.c_last - shift))

    def attend(self, q: Tensor, seqlens: Tensor, *, sm_scale: float, backend: str | None) -> Tensor:
        """The paged decode op on this layer: q (B, Tq, Hq, D) -> (B, Tq, Hq, D), seqlens (B,) int32."""
        return forgetting_attention_with_paged_kvcache(
            q, self.pool.k, self.pool.v, self.pool.c, self.table, self.start, seqlens,
            qk_bound=self.u, max_seqlen=self.max_len, sm_scale=sm_scale, log_eps=self.log_eps, backend=backend,
        )  # fmt: skip

    def next_starts(self, lengths: Tensor) -> Tensor:
        """Per (row, KV head), the first block some query head of the group still keeps for the newest query.

        A block counts as passed when it lies wholly before the newest query's block and its decay (to its
        last key) is below delta for that head, or when it was freed already. Returns (B, Hkv) int64, on
        the device, >= start.
        """
        B, Hkv, nb = self.table.shape
        group = self.pool.c.shape[2]
        c_q = self.last_c(lengths).view(B, Hkv, 1, group)
        c_end = self.pool.c[self.table.long(), BLOCK - 1]  # (B, Hkv, nb, group)
        j = torch.arange(nb, device=c_end.device)[None, None, :, None]
        newest_block = ((lengths.long() - 1) // BLOCK)[:, None, None, None]  # -1 for an empty row
        passed = ((c_q - c_end) < self.delta.view(1, Hkv, 1, group)) | (j < self.start[:, :, None, None])
        passed = passed & (j < newest_block)
        prefix = passed.to(torch.int32).cumprod(2).sum(2)  # (B, Hkv, group): passed blocks form a prefix
        return torch.maximum(prefix.amin(-1).long(), self.start.long())

    def _set(self, mask: Tensor, entries: Tensor, blocks: Tensor, owners: Tensor) -> None:
        """Set the table entries of ``mask`` (host bool) to ``entries`` and the owners of ``blocks`` (host int64)."""
        dev = self.table.device
        self.table_host[mask] = entries.to(torch.int32)
        where = [t.to(dev) for t in mask.nonzero(as_tuple=True)]
        self.table.index_put_(where, entries.to(device=dev, dtype=torch.int32))
        self.pool.owner.index_put_((blocks.to(dev),), owners.to(dev))

    def free_before(self, new_start: Tensor) -> int:
        """Give back the blocks before new_start (B, Hkv) host int64; returns how many."""
        j = torch.arange(self.table.shape[2])
        mask = (j >= self.start_host[:, :, None]) & (j < new_start[:, :, None])
        ids = self.table_host[mask].long()
        self.pool.give(ids)
        self._set(mask, torch.full_like(ids, self.pool.capacity), ids, torch.full_like(ids, self.pool.n_owners))
        self.start_host.copy_(new_start)
        self.start.copy_(self.start_host)
        return ids.numel()

    def reserve(self, lengths: Tensor, ahead: int) -> None:
        """Hold the blocks of each row's next ``ahead`` positions (lengths (B,) host int64)."""
        B, Hkv, nb = self.table.shape
        want = torch.clamp((lengths + ahead + BLOCK - 1) // BLOCK, max=nb)
        j = torch.arange(nb)
        mask = ((j >= self.top[:, None]) & (j < want[:, None]))[:, None, :].expand(B, Hkv, nb)
        ids = self.pool.take(int(mask.sum()), self.index)
        b, h, _ = mask.nonzero(as_tuple=True)
        self._set(mask, ids, ids, (self.row0 + b) * Hkv + h)
        self.top.copy_(torch.maximum(self.top, want))

    def release(self) -> None:
        """Give every held block back and empty the rows."""
        self.free_before(torch.maximum(self.top[:, None].expand_as(self.start_host), self.start_host.long()))
        self.start_host.zero_()
        self.start.zero_()
        self.top.zero_()

    def held(self) -> Tensor:
        """Blocks held per (row, KV head): (B, Hkv) host int64."""
        return self.top[:, None] - self.start_host.long()


_ROW_STATE = ("c_last", "shifted", "shift_k", "shift_v")


class PagedKVCache(KVCache):
    """The evicting decoding cache (``FoxLM.new_cache(..., evict=True)``); the module docstring says why it is safe.

    ``lengths``, ``layers``, ``rows``, ``rebase``, ``snapshot``/``restore`` and ``reset`` behave as in
    ``KVCache``. Besides: ``prepare(ahead)`` evicts and reserves, ``memory_report()`` / ``summary()`` give the
    bytes held against a full cache and the guarantee. ``freeing = False`` keeps every block (the same
    function: ACP already skips every block that would be freed), to compare against.
    """

    def __init__(self, layers: list[PagedLayerCache], lengths: Tensor, *, head_dim: int) -> None:
        super().__init__(layers, lengths)
        self.head_dim = head_dim
        self.freeing = True
        self.auto_prepare = True
        self.gains_stamp: tuple | None = None  # the model's QK-norm gains its bound came from (FoxLM.new_cache)

    @classmethod
    def allocate_paged(
        cls,
        *,
        bounds: list[Tensor],
        log_eps: float,
        batch_size: int,
        max_len: int,
        n_heads: int,
        kv_heads: int,
        head_dim: int,
        token_shift: bool,
        dtype: torch.dtype,
        device: torch.device,
        pool_blocks: int | None = None,
        pool_fraction: float | None = None,
    ) -> PagedKVCache:
        """Pools and tables for len(bounds) layers; bounds[i] (Hq,) is layer i's static logit bound U.

        pool_blocks: blocks per layer; default ceil(pool_fraction * the full cache's blocks) + one block per
        (sequence, KV head), pool_fraction defaulting to DEFAULT_POOL_FRACTION.
        """
        batch_size, max_len = positive_int("batch_size", batch_size), positive_int("max_len", max_len)
        check_cache_dtype(dtype)
        if pool_blocks is not None and pool_fraction is not None:
            raise ValueError("give pool_blocks or pool_fraction, not both")
        B, Hkv, nb, group = batch_size, kv_heads, -(-max_len // BLOCK), n_heads // kv_heads
        if pool_blocks is None:
            fraction = DEFAULT_POOL_FRACTION if pool_fraction is None else pool_fraction
            if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
                raise ValueError(f"pool_fraction must be in (0, 1], got {fraction!r}")
            pool_blocks = math.ceil(float(fraction) * B * Hkv * nb) + B * Hkv
        pool_blocks = positive_int("pool_blocks", pool_blocks)
        P, owners = pool_blocks, B * Hkv
        layers = []
        for i, u in enumerate(bounds):

            def zeros(*shape, dt=dtype, on=device):
                return torch.zeros(*shape, dtype=dt, device=on)

            pool = BlockPool(
                k=zeros(P + 1, BLOCK, head_dim),
                v=zeros(P + 1, BLOCK, head_dim),
                c=zeros(P + 1, BLOCK, group, dt=torch.float32),
                owner=torch.full((P + 1,), owners, dtype=torch.int64, device=device),
                free=torch.arange(P - 1, -1, -1, dtype=torch.int64),  # block 0 is taken first
                n_free=P,
                n_owners=owners,
            )
            layers.append(
                PagedLayerCache(
                    pool=pool,
                    row0=0,
                    table=torch.full((B, Hkv, nb), P, dtype=torch.int32, device=device),
                    table_host=torch.full((B, Hkv, nb), P, dtype=torch.int32),
                    start=zeros(B, Hkv, dt=torch.int32),
                    start_host=zeros(B, Hkv, dt=torch.int32, on="cpu"),
                    top=zeros(B, dt=torch.int64, on="cpu"),
                    c_last=zeros(B, n_heads, dt=torch.float64),
                    shifted=zeros(B, n_heads, dt=torch.float64),
                    shift_k=zeros(B, Hkv, head_dim) if token_shift else None,
                    shift_v=zeros(B, Hkv, head_dim) if token_shift else None,
                    u=u.detach().to(device=device, dtype=torch.float32),
                    log_eps=log_eps,
                    delta=paged_threshold(u, n_heads, max_len, log_eps, device),
                    max_len=max_len,
                    index=i,
                )
            )
        return cls(layers, torch.zeros(B, dtype=torch.int32, device=device), head_dim=head_dim)

    @property
    def max_len(self) -> int:
        return self.layers[0].max_len

    def rows(self, start: int, stop: int | None = None) -> PagedKVCache:
        """A cache over rows start:stop (default start + 1) sharing this one's pools."""
        stop = start + 1 if stop is None else stop
        if not 0 <= start < stop <= self.batch_size:
            raise ValueError(f"rows {start}:{stop} out of range for a cache of batch size {self.batch_size}")
        view = PagedKVCache([layer.rows(start, stop) for layer in self.layers], self.lengths[start:stop],
                            head_dim=self.head_dim)  # fmt: skip
        view.freeing, view.auto_prepare, view.gains_stamp = self.freeing, self.auto_prepare, self.gains_stamp
        return view

    def prepare(self, ahead: int) -> None:
        """Free what every head of a group has passed (if ``freeing``), then hold the next ``ahead`` positions.

        Reads the lengths (and the new starts) back to the host; positions past max_len are not reserved.
        Raises CachePoolExhausted when a pool runs out (nothing is written then).
        """
        lengths = self.lengths.long().cpu()
        if self.freeing:
            starts = torch.stack([layer.next_starts(self.lengths) for layer in self.layers]).cpu()
            for layer, start in zip(self.layers, starts, strict=True):
                layer.free_before(start)
        for layer in self.layers:
            layer.reserve(lengths, ahead)

    def check_reserved(self, new_tokens: int) -> None:
        """Raise ValueError unless the blocks the next ``new_tokens`` positions of every row go to are held (a host
        read). Unheld entries of the table point at the scratch block, which every row would share: without
        ``prepare`` (``auto_prepare`` off) the tokens would overwrite one another there."""
        need = (self.lengths.long().cpu() + new_tokens + BLOCK - 1) // BLOCK
        if bool((need > self.layers[0].top).any()):
            raise ValueError(
                f"the next {new_tokens} token(s) go past the blocks this evicting cache holds: with auto_prepare off, "
                "call cache.prepare(n) before every n tokens (generate does), or turn auto_prepare back on"
            )

    def snapshot(self) -> list[Tensor]:
        """``KVCache.snapshot``, and the count of blocks each pool gave back: freed blocks cannot come back (see
        ``restore``)."""
        return [*super().snapshot(), *(torch.tensor(layer.pool.given) for layer in self.layers)]

    def restore(self, snapshot: list[Tensor]) -> None:
        """``KVCache.restore``; raises ValueError, changing nothing, when blocks were freed since the snapshot.

        Freed blocks may have been reused, and the restored queries may still need them: undoing steps (e.g.
        rejected speculated tokens) needs ``freeing = False`` (or no ``prepare``) between snapshot and restore.
        """
        n = len(self.layers)
        # Any block given back since (by eviction, by any row sharing the pool, or by reset) may be reused.
        moved = [i for i, (layer, s) in enumerate(zip(self.layers, snapshot[-n:], strict=True))
                 if layer.pool.given != int(s)]  # fmt: skip
        if moved:
            raise ValueError(
                f"cannot restore the snapshot: blocks were freed since it was taken (layers {moved}); keep "
                "cache.freeing = False (and no reset) while steps may be undone"
            )
        super().restore(snapshot[:-n])

    def reset(self) -> None:
        """Give every block back and empty every sequence."""
        for layer in self.layers:
            layer.release()
        super().reset()

    def block_bytes(self) -> int:
        """Bytes of one block: K and V of BLOCK keys of one KV head, and their c for each head of the group."""
        pool = self.layers[0].pool
        return BLOCK * (2 * self.head_dim * pool.k.element_size() + 4 * pool.c.shape[2])

    def memory_report(self) -> dict:
        """Bytes held against a full cache (overall, per layer, per KV head) and the guarantee.

        A full cache (``KVCache``) holds K, V and c of max_len positions per sequence; this one holds its
        held blocks (the pools are allocated once: ``pool_bytes``).
        """
        first = self.layers[0]
        B, Hkv, nb = first.table.shape
        per_head_full = nb * self.block_bytes()  # per (sequence, KV head), block-aligned as the pool is
        layers = []
        for layer in self.layers:
            held = layer.held() * self.block_bytes()  # (B, Hkv)
            layers.append(
                {
                    "bytes_held": int(held.sum()),
                    "bytes_full": B * Hkv * per_head_full,
                    "per_kv_head_fraction": (held.sum(0).double() / (B * per_head_full)).tolist(),
                    "blocks_held": int(layer.held().sum()),
                    "blocks_free": layer.pool.n_free,
                    "pool_blocks": layer.pool.capacity,
                }
            )
        held = sum(r["bytes_held"] for r in layers)
        full = sum(r["bytes_full"] for r in layers)
        pool = sum((r["pool_blocks"] + 1) * self.block_bytes() for r in layers)
        return {
            "bytes_held": held,
            "bytes_full": full,
            "fraction_held": held / full,
            "pool_bytes": pool,
            "block": BLOCK,
            "guarantee": {
                "eps": math.exp(first.log_eps),
                "log_eps": first.log_eps,
                "L_max": self.max_len,
                "delta": [layer.delta.tolist() for layer in self.layers],
                "qk_bound": [layer.u.tolist() for layer in self.layers],
                "statement": "every freed block was below delta = -2U - log(L_max) + log(eps) for each head of "
                "its group at the newest query, so for every later one; each output row stays within "
                "2 eps max|v| of exact attention, as with ACP without eviction",
            },
            "layers": layers,
        }

    def summary(self) -> str:
        """A readable form of ``memory_report``."""
        r = self.memory_report()
        g = r["guarantee"]
        deltas = [d for layer in g["delta"] for d in layer]
        lines = [
            f"KV cache: {r['bytes_held'] / 2**20:.1f} MiB held of {r['bytes_full'] / 2**20:.1f} MiB full "
            f"({100 * r['fraction_held']:.1f}%), pools {r['pool_bytes'] / 2**20:.1f} MiB",
            f"guarantee: eps = e^{g['log_eps']:g}, L_max = {g['L_max']}, delta in [{min(deltas):.2f}, "
            f"{max(deltas):.2f}] (fixed): freed keys are ones ACP skips for every later query",
        ]
        for i, layer in enumerate(r["layers"]):
            heads = " ".join(f"{100 * f:.0f}%" for f in layer["per_kv_head_fraction"])
            lines.append(f"layer {i}: {100 * layer['bytes_held'] / layer['bytes_full']:.1f}% held; per KV head {heads}")
        return "\n".join(lines)
