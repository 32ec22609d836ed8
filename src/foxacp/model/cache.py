"""The decoding cache: preallocated per-layer buffers that the model writes at each sequence's length.

Precision of the cumulative gate. The attention only uses differences c_i - c_j, so the cache may subtract
any per-(sequence, head) constant. A naive float32 running sum reaches |c| ~ 1e4-1e5 after tens of thousands
of fast-forgetting tokens, where a float32 step is 1e-3-1e-2: the near-diagonal differences, the ones that
carry the attention mass, would be that wrong. So each layer keeps the running total of its last position
in float64 (``c_last``) relative to an anchor, writes every new c as float32(running total), and ``rebase``
moves the anchor to the newest position once |c_last| exceeds ``REBASE_AT``: the cached c of that
(sequence, head) are shifted by the same integer constant. Shifting by an integer keeps the values near the
new anchor exact (they lie on a float32 grid of step <= 1); values far behind it round, but their decay is
large and precision there is relative. After a shift the running total restarts from the stored float32
value of the last position (an error of at most half a float32 step at |c| ~ REBASE_AT, once per rebase),
so that c stays non-increasing even for gates far smaller than a float32 step.

Rebasing the whole cache is one pass over c, so it is rare and decided on the host (the check reads
|c_last| back): the one-token decode step itself never synchronises and captures in a CUDA graph.
``generate`` rebases at its periodic EOS checks; a prefill of more than one token rebases (without a host
read) before it writes, so that the end of a long chunk is written relative to its own position; and any
forward that reads back anyway (more than one token, a paged cache's ``prepare``, or value checks on, the
default: a user's own one-token loop) rebases after it (experiments/059-paged-prefill-precision).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

# |c| at which the anchor moves: float32 values below 2**6 in magnitude are exact to 2**-18 ~ 4e-6.
REBASE_AT = 64.0


def check_cache_dtype(dtype: torch.dtype) -> None:
    """Raise TypeError unless ``dtype`` is a floating dtype (the cached K and V are the model's)."""
    if not dtype.is_floating_point:
        raise TypeError(f"the cache's dtype must be a floating dtype, got {dtype}")


def positive_int(name: str, value) -> int:
    """``value`` as an int (Python's or NumPy's integers, not bools); ValueError naming ``name`` unless >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@dataclass
class LayerCache:
    """One layer's buffers, all written in place.

    k, v: (B, max_len, Hkv, D) keys (after token shift, QK-norm or RoPE) and values, in the model's dtype.
    c: (B, max_len, Hq) float32 cumulative log forget gate at each position, relative to the anchor.
    c_last: (B, Hq) float64 running c of the last cached position (0 for an empty sequence).
    shifted: (B, Hq) float64 the total that rebases subtracted from the row's stored c (``restore`` uses it).
    shift_k, shift_v: (B, Hkv, D) the last projected k and v rows before the token shift (FoX Pro), else None.
    """

    k: Tensor
    v: Tensor
    c: Tensor
    c_last: Tensor
    shifted: Tensor
    shift_k: Tensor | None
    shift_v: Tensor | None

    @property
    def kv_heads(self) -> int:
        return self.k.shape[2]

    def rows(self, start: int, stop: int) -> LayerCache:
        """Views of rows start:stop (writes go to this cache)."""
        return LayerCache(*(None if t is None else t[start:stop] for t in self._tensors()))

    def _tensors(self) -> tuple[Tensor | None, ...]:
        return (self.k, self.v, self.c, self.c_last, self.shifted, self.shift_k, self.shift_v)

    def write(self, pos: Tensor, k: Tensor, v: Tensor, log_fgate: Tensor, *, rebase_at: float | None) -> None:
        """Store new keys, values and gates at positions pos (B, T) int64; k, v (B, T, Hkv, D); gates (B, T, Hq).

        Index writes (no host read of the positions) so that a decode step captures in a CUDA graph. With
        ``rebase_at``, the anchor first moves to the last new position where its |c| would exceed it (one
        pass over ``c``: worth it for a prefill chunk, whose end would otherwise be written imprecisely).
        """
        rows = torch.arange(pos.shape[0], device=pos.device)[:, None]
        self.k[rows, pos] = k.to(self.k.dtype)
        self.v[rows, pos] = v.to(self.v.dtype)
        steps = log_fgate.to(torch.float64).cumsum(1)
        if rebase_at is not None:
            self.rebase(rebase_at, pos[:, 0], self.c_last + steps[:, -1])
        c = self.c_last[:, None] + steps
        self.c[rows, pos] = c.to(torch.float32)
        self.c_last.copy_(c[:, -1])

    def rebase(self, threshold: float, lengths: Tensor, target: Tensor | None = None) -> None:
        """Where |target| > threshold, subtract trunc(target) from that (sequence, head)'s c. No host sync.

        lengths (B,): the cached tokens per row; target (B, Hq) float64 defaults to c_last (the anchor moves to
        the last position). Where it moves, c_last takes the shifted float32 value of the last position: the next c are
        computed from it, so they can never rise above it even where the shift rounded.
        """
        target = self.c_last if target is None else target
        shift = torch.where(target.abs() > threshold, target.trunc(), 0.0)
        self.c.sub_(shift.to(torch.float32)[:, None, :])
        self.shifted.add_(shift)
        moved = (shift != 0) & (lengths[:, None] > 0)
        self.c_last.copy_(torch.where(moved, self.last_c(lengths).to(torch.float64), self.c_last - shift))

    def last_c(self, lengths: Tensor) -> Tensor:
        """The stored float32 c of each row's last cached position: (B, Hq) (0 for an empty row)."""
        last = (lengths.long() - 1).clamp(min=0)[:, None, None].expand(-1, 1, self.c.shape[2])
        return torch.where(lengths[:, None] > 0, self.c.gather(1, last)[:, 0], 0.0)


class KVCache:
    """Per-layer decoding buffers and the length of each sequence, allocated once (``FoxLM.new_cache``).

    ``lengths`` (B,) int32 counts each sequence's cached tokens; ``layers`` holds one LayerCache per block.
    ``rows(start, stop)`` gives a cache over some rows (views), e.g. to prefill prompts of different lengths
    one by one. ``reset()`` empties it for reuse.
    """

    def __init__(self, layers: list[LayerCache], lengths: Tensor) -> None:
        self.layers = layers
        self.lengths = lengths
        self.interrupted = False  # an unchecked step raised part-way (FoxLM refuses the cache until reset/restore)

    @classmethod
    def allocate(
        cls,
        *,
        n_layers: int,
        batch_size: int,
        max_len: int,
        n_heads: int,
        kv_heads: int,
        head_dim: int,
        token_shift: bool,
        dtype: torch.dtype,
        device: torch.device,
    ) -> KVCache:
        """Zeroed buffers for n_layers layers (see LayerCache for the shapes)."""
        batch_size, max_len = positive_int("batch_size", batch_size), positive_int("max_len", max_len)
        check_cache_dtype(dtype)
        B, kv = batch_size, (batch_size, max_len, kv_heads, head_dim)

        def shift() -> Tensor | None:
            return torch.zeros(B, kv_heads, head_dim, dtype=dtype, device=device) if token_shift else None

        layers = [
            LayerCache(
                k=torch.zeros(kv, dtype=dtype, device=device),
                v=torch.zeros(kv, dtype=dtype, device=device),
                c=torch.zeros(B, max_len, n_heads, dtype=torch.float32, device=device),
                c_last=torch.zeros(B, n_heads, dtype=torch.float64, device=device),
                shifted=torch.zeros(B, n_heads, dtype=torch.float64, device=device),
                shift_k=shift(),
                shift_v=shift(),
            )
            for _ in range(n_layers)
        ]
        return cls(layers, torch.zeros(B, dtype=torch.int32, device=device))

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def max_len(self) -> int:
        return self.layers[0].k.shape[1]

    def rows(self, start: int, stop: int | None = None) -> KVCache:
        """A cache over rows start:stop (default start + 1) whose buffers are views of this one."""
        stop = start + 1 if stop is None else stop
        if not 0 <= start < stop <= self.batch_size:
            raise ValueError(f"rows {start}:{stop} out of range for a cache of batch size {self.batch_size}")
        return KVCache([layer.rows(start, stop) for layer in self.layers], self.lengths[start:stop])

    def rebase(self, threshold: float = REBASE_AT) -> bool:
        """Move the gate anchors where |c_last| > threshold (see the module docstring). Reads back one flag.

        Returns whether any anchor moved.
        """
        far = torch.stack([layer.c_last.abs().amax() for layer in self.layers]).amax()
        if not bool(far > threshold):
            return False
        for layer in self.layers:
            layer.rebase(threshold, self.lengths)
        return True

    def snapshot(self) -> list[Tensor]:
        """Copies of what a step changes besides the entries it writes past each row's length.

        ``restore`` of a snapshot undoes any steps taken since (their entries lie past the restored lengths,
        where nothing reads them and the next step overwrites them). A rebase in between (a forward of more
        than one token may rebase by itself) stays: the stored c keep its shift, and the restored rows'
        running totals are put in that frame.
        """
        return [t.clone() for t in self._state()] + [layer.shifted.clone() for layer in self.layers]

    def restore(self, snapshot: list[Tensor]) -> None:
        """Go back to a ``snapshot`` of this cache."""
        self.interrupted = False
        n = len(self.layers)
        for t, s in zip(self._state(), snapshot[:-n], strict=True):
            t.copy_(s)
        for layer, before in zip(self.layers, snapshot[-n:], strict=True):
            # Where a rebase moved the anchor since, the running total restarts from the stored value of the
            # restored last position, as the rebase itself does (c stays non-increasing).
            moved = (layer.shifted != before) & (self.lengths[:, None] > 0)
            layer.c_last.copy_(torch.where(moved, layer.last_c(self.lengths).to(torch.float64), layer.c_last))

    def _state(self) -> list[Tensor]:
        state = [self.lengths]
        for layer in self.layers:
            state += [t for t in (layer.c_last, layer.shift_k, layer.shift_v) if t is not None]
        return state

    def reset(self) -> None:
        """Empty every sequence (the buffers stay allocated; stale entries are never read)."""
        self.interrupted = False
        self.lengths.zero_()
        for layer in self.layers:
            layer.c_last.zero_()
            layer.shifted.zero_()
            if layer.shift_k is not None:
                layer.shift_k.zero_()
                layer.shift_v.zero_()
