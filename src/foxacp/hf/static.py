"""FoxStaticCache: a FoxCache of fixed size whose one-token step has fixed shapes and reads nothing back.

``generate(..., cache_implementation="static")`` builds one (FoxForCausalLM._prepare_cache_for_generation): the
KVCache is allocated once for (batch size, max_length) and reused by later generate calls of the same shapes.
Its one-token step is foxacp.generate's ``decode_one_token`` (no sampling: it returns the logits): index writes at
each row's length, the decode op, no host reads and no data-dependent Python control flow, so on CUDA it is
captured once in a CUDA graph over the cache's buffers and replayed, and it can run through ``torch.compile``
(``compile_step``: generate sets it where transformers would compile). The host-side work stays outside the step:
the attention-mask checks, the length count and the gate rebase every REBASE_EVERY steps.
"""

from __future__ import annotations

from foxacp.model import FoxLM
from foxacp.model.cache import KVCache

from .cache import FoxCache, FoxCacheLayer

# torch.compile modes whose CUDA graphs the cache's own graph replaces (a capture cannot nest in another).
WITHOUT_CUDAGRAPHS = {"reduce-overhead": None, "max-autotune": "max-autotune-no-cudagraphs"}


class FoxStaticCacheLayer(FoxCacheLayer):
    """A layer of a FoxStaticCache: fixed-size buffers, so transformers may compile the step that uses them."""

    is_compileable = True


def _storage(model: FoxLM) -> tuple[int, ...]:
    """Where the model's parameters and buffers live (their data pointers)."""
    return tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))


class FoxStaticCache(FoxCache):
    """A FoxCache over one preallocated KVCache of ``batch_size`` rows and ``max_cache_len`` tokens per row.

    cuda_graph: replay the one-token step as a CUDA graph (default: when the model is on CUDA). The step is
    captured at the first one-token call and stays valid for the cache's life (``reset`` keeps the buffers).

    Raises:
        TypeError: model is not a FoxLM.
        ValueError: a non-positive batch_size or max_cache_len, a CUDA graph off CUDA.
    """

    layer_class = FoxStaticCacheLayer

    def __init__(self, model: FoxLM, batch_size: int, max_cache_len: int, *, cuda_graph: bool | None = None) -> None:
        super().__init__(model, cuda_graph=cuda_graph)
        self.kv = model.new_cache(batch_size, max_cache_len)
        self.max_cache_len = max_cache_len
        self._storage = _storage(model)

    def fits(self, batch_size: int, max_cache_len: int) -> bool:
        """Whether a generation of batch_size rows of up to max_cache_len tokens can reuse this cache: also that
        the model's parameters and buffers still live where they did (a captured step reads them there; a
        round trip such as ``.half().float()`` moves them)."""
        weight, k = self.model.embed.weight, self.kv.layers[0].k
        same_place = (weight.device, weight.dtype) == (k.device, k.dtype) and _storage(self.model) == self._storage
        return same_place and batch_size == self.kv.batch_size and max_cache_len <= self.max_cache_len

    def reset(self) -> None:
        """Empty the cache for the next generation (the buffers, and so a captured step, stay)."""
        self.kv.reset()
        self.seen = self.steps = 0

    def compile_step(self, options: dict | None) -> None:
        """Run the one-token step through ``torch.compile(**options)`` (backend, fullgraph, dynamic, mode, ...), or
        eagerly with None (the default).

        A mode that adds CUDA graphs is mapped to its mode without them (WITHOUT_CUDAGRAPHS): with cuda_graph
        the cache captures the compiled step itself. The step is rebuilt (and captured again) when this changes.
        """
        if options is not None:
            options = dict(options)
            if self.cuda_graph and options.get("mode") in WITHOUT_CUDAGRAPHS:
                options["mode"] = WITHOUT_CUDAGRAPHS[options["mode"]]
        if options != self.compile_options:
            self.compile_options, self._step = options, None

    def _allocate(self, batch_size: int, prompt_len: int) -> KVCache:
        if batch_size != self.kv.batch_size:
            raise ValueError(f"input_ids has batch size {batch_size} but the static cache has {self.kv.batch_size}")
        self.reset()
        self._reserve(prompt_len)
        return self.kv

    def _reserve(self, n: int) -> None:
        if self.seen + n > self.max_cache_len:
            raise ValueError(
                f"input_ids: {n} more tokens after {self.seen} exceed the static cache's {self.max_cache_len}"
            )
