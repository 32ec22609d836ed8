"""FoxCache: foxacp's decoding cache (model/cache.py) behind transformers' Cache API, for generate().

transformers sees one sequence length for the whole batch: the padded prompt plus the tokens generated so far
(``seen``). foxacp's KVCache holds each row's real tokens only, at its own length, so left padding never
enters a forget gate or a token shift. Each layer of the Cache is a FoxCacheLayer over foxacp's LayerCache
(keys and values, the cumulative log gate c and its float64 running total, the token-shift rows).
A FoxCache allocates at its first forward and grows by doubling when a call would overflow it (a copy, rare);
FoxStaticCache (static.py) is the fixed-size one that ``cache_implementation="static"`` builds.

What the host does per call (decode steps read nothing back, as in foxacp.generate): the gates are rebased
every REBASE_EVERY decode steps, at the same steps as foxacp.generate, so both give the same numbers.

On CUDA a one-token step (foxacp.generate's ``decode_one_token``: fixed shapes, no host reads) is captured in a CUDA
graph over the cache's buffers and replayed, as foxacp.generate does; a FoxCache captures it again after it grows
(new buffers). Eager, a step dispatches ~180 aten ops per layer from the host: transformers' default path ran at
0.10x foxacp.generate's speed before it replayed a graph (125M, H200, 7145543's hf-generate set, in git) and at
0.97x (B=1) and 1.09x (B=8) since (results/2026-12-06-9c75236-hf-generate-h200).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin

from foxacp.infer.generate import CHECK_EVERY, decode_one_token
from foxacp.infer.graph import CUDAGraphStep
from foxacp.model import FoxLM
from foxacp.model.cache import KVCache, LayerCache
from foxacp.ops import set_value_checks

# Decode steps between rebases of the cached gates (a host read each): foxacp.generate's schedule.
REBASE_EVERY = CHECK_EVERY
# Room left after the first call, so that a short generation never reallocates.
HEADROOM = 256

# Why a cache refuses right padding: its next tokens would follow the padding, which a forget gate cannot skip.
RIGHT_PADDING_ERROR = (
    "attention_mask: right padding (each row: ones, then zeros) is supported only by a forward that neither makes "
    "nor continues a cache; generate and a cache take prompts padded on the left: pad on the left "
    "(tokenizer.padding_side = 'left'), or, for a forward that needs no cache, pass use_cache=False"
)


def padding_side(mask: Tensor) -> str:
    """Where the rows of an attention_mask (B, T) of 0 (padding) and 1 (tokens) are padded: "none" (all ones),
    "left" (each row zeros, then ones) or "right" (each row ones, then zeros). One host read.

    Raises:
        ValueError: values other than 0 and 1, a row of padding only, or rows padded elsewhere than on one side,
            the same side for the whole batch (holes such as 0 1 0 1, padding on both ends, left and right rows).
    """
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (tokens)")
    if bool(mask.all()):
        return "none"
    if bool((mask.sum(1) == 0).any()):
        raise ValueError("attention_mask: every row needs at least one token")
    if not bool((mask[:, 1:] < mask[:, :-1]).any()):
        return "left"
    if not bool((mask[:, 1:] > mask[:, :-1]).any()):
        return "right"
    raise ValueError(
        "attention_mask: only left padding (each row: zeros, then ones) is supported, or right padding (ones, then "
        "zeros) in a forward that neither makes nor continues a cache; not holes or both sides"
    )


class FoxCacheLayer(CacheLayerMixin):
    """One layer of a FoxCache: ``state`` is foxacp's LayerCache of that layer (None before the first call).

    FoxLM writes it itself, so ``update`` (transformers' key/value hand-over) is refused.
    """

    is_compileable = False
    is_sliding = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, owner: FoxCache, index: int) -> None:
        super().__init__()
        self.owner, self.index = owner, index

    @property
    def state(self) -> LayerCache | None:
        kv = self.owner.kv
        return None if kv is None else kv.layers[self.index]

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        raise NotImplementedError("a FoxCache is allocated by FoxForCausalLM's forward")

    def update(self, *args, **kwargs):
        raise NotImplementedError("FoxLM writes its cache layers itself; they take no key/value states")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self.owner.get_seq_length()

    def get_max_length(self) -> int:
        return self.owner.max_cache_len

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise NotImplementedError("beam search is not supported by FoxCache")


def _logits(logits: Tensor) -> Tensor:
    """decode_one_token's sampler for a step that returns the logits (B, V) float32 themselves."""
    return logits


class FoxCache(Cache):
    """transformers Cache over a foxacp KVCache for ``model`` (a FoxLM), allocated at the first forward.

    ``kv``: the KVCache (None until then); ``seen``: the tokens transformers has fed per row, padding included;
    ``steps``: the calls since the prefill. cuda_graph: replay one-token steps as a CUDA graph (default: when the
    model is on CUDA), captured at the first one taken without autograd and again after each growth.

    Raises:
        TypeError: model is not a FoxLM.
        ValueError: a CUDA graph off CUDA.
    """

    layer_class = FoxCacheLayer
    max_cache_len = -1  # no fixed size

    def __init__(self, model: FoxLM, *, cuda_graph: bool | None = None) -> None:
        if not isinstance(model, FoxLM):
            raise TypeError(f"model must be a FoxLM, got {type(model).__name__}")
        super().__init__(layers=[self.layer_class(self, i) for i in range(model.config.n_layers)])
        self.model = model
        self.kv: KVCache | None = None
        self.seen = 0
        self.steps = 0
        device = model.embed.weight.device
        self.cuda_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
        if self.cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph needs a model on a CUDA device, not {device}")
        self.compile_options: dict | None = None  # torch.compile's options for the step (FoxStaticCache sets them)
        self._pending: tuple[Tensor, Tensor | None] | None = None  # tokens fed at the first call (``defer``)
        self._step: Callable[[Tensor], Tensor] | None = None  # the one-token step over ``kv``'s buffers
        self._step_graphed = False  # whether ``_step`` is a CUDA graph

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen if self._pending is None else self._pending[0].shape[1]

    def defer(self, input_ids: Tensor, attention_mask: Tensor | None) -> None:
        """Hold the prompts of a forward whose logits came from the full forward (use_cache=None): the first call
        that continues them feeds them first, so that a plain forward allocates nothing unless continued. Prompts
        padded on the right (which that forward takes) are refused there, by every call, and stay unfed."""
        if self.seen or self._pending is not None:
            raise ValueError("only an empty FoxCache can hold deferred prompts")
        # Copies, as transformers' caches copy what they are given: the caller may reuse its token buffer.
        self._pending = (input_ids.clone(), None if attention_mask is None else attention_mask.clone())

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("FoxCache cannot be cropped (assisted decoding is not supported)")

    def reorder_cache(self, beam_idx: Tensor) -> None:
        raise NotImplementedError("beam search is not supported by FoxCache")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Feed the next tokens input_ids (B, T) -> their logits (B, T, V).

        The first call takes the prompts, left-padded where attention_mask (B, T) is 0 (logits there are 0);
        later calls take every row's next T tokens, with attention_mask (B, seen + T) or None (generate passes
        None after the prompts: its new columns are all ones, and checking them would be a host read per step).

        Raises:
            ValueError: a mask of the wrong shape, not 0/1, padded other than on the left of the prompts (deferred
                prompts included: RIGHT_PADDING_ERROR names the fix for right padding),
                a row of padding only, a batch size that differs from the first call's, or (FoxStaticCache)
                more tokens than it holds.
        """
        if self._pending is not None:  # the prompts of the forward that returned this cache (their logits are out)
            (prompts, mask), self._pending = self._pending, None
            try:
                self.forward(prompts, mask)
            except BaseException:  # refused (right-padded prompts) or failed: the cache holds them still, unfed
                self._pending = (prompts, mask)
                raise
        B, T = input_ids.shape
        if attention_mask is not None:
            attention_mask = attention_mask.to(torch.long)
            if attention_mask.shape != (B, self.seen + T):
                raise ValueError(
                    f"attention_mask must be (B, cached + new) {(B, self.seen + T)}, not {tuple(attention_mask.shape)}"
                )
        if self.seen == 0:
            return self._prefill(input_ids, attention_mask)
        if self.kv.batch_size != B:
            raise ValueError(f"input_ids has batch size {B} but the cache was started with {self.kv.batch_size}")
        if attention_mask is not None and bool((attention_mask[:, self.seen :] != 1).any()):
            raise ValueError("attention_mask: only the prompts may be padded (on the left); new tokens take 1")
        self._reserve(T)
        if (self.steps + 1) % REBASE_EVERY == 0:
            self.kv.rebase()
        # After the prefill the cache holds only what the model wrote, so the ops' gate value checks (a host
        # read per layer and step) have nothing left to find, as in foxacp.generate.
        checks = set_value_checks(False)
        try:
            logits = self._decode(input_ids)
        finally:
            set_value_checks(checks)
        self.seen += T
        self.steps += 1
        return logits

    def _decode(self, input_ids: Tensor) -> Tensor:
        """The tokens after the prefill: one token per row through the fixed-shape step where it is a CUDA graph or
        compiled (and no gradient is wanted: a graph cannot record one), else FoxLM's cached forward."""
        graphed = self.cuda_graph and not torch.is_grad_enabled()
        if input_ids.shape[1] != 1 or not (graphed or self.compile_options is not None):
            return self.model(input_ids, cache=self.kv)
        if self._step is None or self._step_graphed != graphed:
            self._step, self._step_graphed = self._build_step(input_ids[:, 0], graphed), graphed
        return self._step(input_ids[:, 0])[:, None].clone()  # a graph's output buffer is reused by the next step

    def _build_step(self, example: Tensor, graphed: bool) -> Callable[[Tensor], Tensor]:
        one_token = decode_one_token
        if self.compile_options is not None:
            one_token = torch.compile(decode_one_token, **self.compile_options)
        step = functools.partial(one_token, self.model, self.kv, sampler=_logits)
        return CUDAGraphStep(step, self.kv, example, None) if graphed else step

    def _allocate(self, batch_size: int, prompt_len: int) -> KVCache:
        self._step = None  # new buffers: a step captured over the old ones is stale
        return self.model.new_cache(batch_size, prompt_len + HEADROOM)

    def _prefill(self, input_ids: Tensor, mask: Tensor | None) -> Tensor:
        B, T = input_ids.shape
        side = "none" if mask is None else padding_side(mask)
        if side == "right":
            raise ValueError(RIGHT_PADDING_ERROR)
        self.kv = self._allocate(B, T)
        if side == "none":
            logits = self.model(input_ids, cache=self.kv)
        else:
            logits = None
            for b in range(B):  # each row's real tokens into its own cache row, nothing padded
                keep = mask[b].bool()
                row = self.model(input_ids[b, keep][None], cache=self.kv.rows(b, b + 1))[0]
                if logits is None:
                    logits = row.new_zeros(B, T, row.shape[-1])
                logits[b, keep] = row
        self.seen = T
        return logits

    def _reserve(self, n: int) -> None:
        """Grow the buffers (doubling) so that every row has room for n more tokens, and one more with a CUDA graph
        (capturing runs the step twice ahead of the cache's length before restoring it)."""
        kv = self.kv
        need = self.seen + n + int(self.cuda_graph)  # no row is longer than seen (padding is not cached)
        if need <= kv.max_len:
            return
        self._step = None  # captured over the buffers about to be replaced
        grown = self.model.new_cache(kv.batch_size, max(need, 2 * kv.max_len), dtype=kv.layers[0].k.dtype)
        for old, new in zip(kv.layers, grown.layers, strict=True):
            for name in ("k", "v", "c"):
                getattr(new, name)[:, : kv.max_len].copy_(getattr(old, name))
            for name in ("c_last", "shifted", "shift_k", "shift_v"):
                if getattr(old, name) is not None:
                    getattr(new, name).copy_(getattr(old, name))
        grown.lengths.copy_(kv.lengths)
        grown.interrupted = kv.interrupted  # a half-written state stays refused in its new buffers
        self.kv = grown
