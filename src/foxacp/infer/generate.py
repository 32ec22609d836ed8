"""Text generation with the decoding cache: prefill, decode_one_token, decode_n_tokens, generate.

The one-token step is the only hot path: it reads nothing back to the host, so on CUDA it is captured
once in a CUDA graph (all layers and the sampling) and replayed. The host looks at the device every
``CHECK_EVERY`` tokens only, to stop when every sequence has emitted EOS and to rebase the cached gates.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from foxacp.model import FoxLM
from foxacp.model.cache import KVCache
from foxacp.model.lm import RunBlock
from foxacp.model.paged import PagedKVCache
from foxacp.ops import set_value_checks
from foxacp.ops.config import dependent_launch_available

from .graph import CUDAGraphStep, compiled_block_step
from .sampling import check_sampling, sample

# Tokens between the host's looks at the device (EOS, gate rebasing): few enough reads that the host stays
# ahead, often enough that a finished batch wastes little.
CHECK_EVERY = 16
# Prefill chunk of an evicting cache when none is given: the blocks a chunk passes are freed before the next
# one, so a long prompt never holds much more than its heads' windows plus one chunk.
EVICT_PREFILL_CHUNK = 512

Sampler = Callable[[Tensor], Tensor]


def prefill(model: FoxLM, cache: KVCache, prompts: list[Tensor], chunk: int | None = None) -> Tensor:
    """Write prompts[b] (1-D int64) into row b of an empty cache; returns the last logits (B, vocab) float32.

    The first min(len) tokens of every prompt run as one batch, then each longer prompt's rest alone in its
    own row, so nothing is ever padded. chunk: feed at most this many tokens per forward (None: all at once).
    """

    def feed(part: KVCache, ids: Tensor) -> Tensor:
        step = chunk or ids.shape[1]
        for start in range(0, ids.shape[1], step):
            logits = model(ids[:, start : start + step], cache=part)
        return logits[:, -1]

    common = min(len(p) for p in prompts)
    last = list(feed(cache, torch.stack([p[:common] for p in prompts])))
    for b, p in enumerate(prompts):
        if len(p) > common:
            last[b] = feed(cache.rows(b), p[None, common:])[0]
    return torch.stack(last).float()


def decode_one_token(
    model: FoxLM, cache: KVCache, tokens: Tensor, sampler: Sampler, run_block: RunBlock | None = None
) -> Tensor:
    """Append tokens (B,) int64 to the cache and sample the next ones: (B,) int64. No host reads.

    run_block: how each block runs (see ``FoxLM.forward``), e.g. ``compiled_block_step()``."""
    return sampler(model(tokens[:, None], cache=cache, run_block=run_block)[:, -1].float())


def decode_n_tokens(
    step: Callable[[Tensor], Tensor],
    cache: KVCache,
    first: Tensor,
    n: int,
    *,
    eos_token_id: int | None = None,
    callback: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """Up to n tokens per row starting with ``first`` (B,), each fed to ``step`` for the next: (B, <= n).

    Stops early once every row has produced eos_token_id (checked every CHECK_EVERY tokens); rows that
    finished keep decoding until then (the caller trims them). callback(tokens (B,)) sees every step.
    A ``PagedKVCache`` must hold the first CHECK_EVERY positions already (``prepare``); it is evicted and
    extended at each check.
    """
    out = torch.empty(first.shape[0], n, dtype=torch.long, device=first.device)
    done = torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
    tokens = first
    for i in range(n):
        out[:, i] = tokens
        if callback is not None:
            callback(out[:, i])  # not ``tokens``: a CUDA graph's output buffer, which the next step overwrites
        if eos_token_id is not None:
            done |= tokens == eos_token_id
        if i + 1 == n:
            break
        if (i + 1) % CHECK_EVERY == 0:
            if eos_token_id is not None and bool(done.all()):
                return out[:, : i + 1]
            cache.rebase()
            if isinstance(cache, PagedKVCache):
                cache.prepare(CHECK_EVERY)  # free what ACP passed, hold the next CHECK_EVERY positions
        tokens = step(tokens)
    return out


def _count(value: object, name: str, least: int, other: str = "") -> int:
    """``value`` as a Python int (numpy integers too) >= ``least``; bools and the rest raise ValueError."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an int >= {least}{other}, got {value!r}")
    return int(value)


def _as_prompts(prompts: Tensor | Sequence[Sequence[int] | Tensor], vocab: int, device: torch.device) -> list[Tensor]:
    if isinstance(prompts, Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"prompts as a tensor must be (B, T), got shape {tuple(prompts.shape)}")
        prompts = list(prompts)
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError("prompts must be a (B, T) tensor or a non-empty list of token sequences")
    out = []
    for i, p in enumerate(prompts):
        t = torch.as_tensor(p)
        if t.dim() != 1 or t.numel() == 0:
            raise ValueError(f"prompt {i} must be a non-empty 1-D token sequence, got shape {tuple(t.shape)}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"prompt {i} must hold integer token ids, got {t.dtype}")
        if int(t.min()) < 0 or int(t.max()) >= vocab:
            raise ValueError(f"prompt {i} has token ids outside [0, {vocab})")
        out.append(t.to(device=device, dtype=torch.long))
    return out


def _trim(row: Tensor, eos_token_id: int | None) -> Tensor:
    if eos_token_id is not None:
        hits = (row == eos_token_id).nonzero()
        if len(hits):
            return row[: int(hits[0]) + 1]
    return row


@torch.no_grad()
def generate(
    model: FoxLM,
    prompts: Tensor | Sequence[Sequence[int] | Tensor],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    prefill_chunk: int | None = None,
    seed: int | None = None,
    max_len: int | None = None,
    cuda_graph: bool | None = None,
    compile: bool = False,
    callback: Callable[[Tensor], None] | None = None,
    evict: bool = False,
    pool_fraction: float | None = None,
    memory_report: dict | None = None,
) -> list[Tensor]:
    """Continue each prompt by up to max_new_tokens tokens.

    Args:
        model: a FoxLM (any variant), on the device to generate on.
        prompts: (B, T) int64, or a list of B 1-D token sequences (lists or tensors) of any lengths; each
            continues from its own end in its own cache row (nothing is padded).
        max_new_tokens: tokens to generate per prompt (>= 1).
        temperature, top_k, top_p: sampling (see ``foxacp.infer.sampling.sample``); temperature 0 is greedy.
        eos_token_id: a sequence stops after producing it (the EOS is kept).
        prefill_chunk: prefill in chunks of this many tokens (None: each prompt in one forward).
        seed: seeds the sampling generator (on the model's device), so a seed fixes the output for the same
            prompts; a prompt's samples also depend on the batch it is in (one draw serves all rows). None draws
            the seed from torch's global generator.
        max_len: the cache's length (default: the longest prompt + max_new_tokens).
        cuda_graph: capture the one-token step in a CUDA graph (default: on CUDA devices).
        compile: run each block of the one-token step through ``torch.compile`` (fuses its many small ops,
            which a CUDA graph alone still launches one by one; one block is compiled per batch size and
            cache length, in seconds, and reused for every layer and later calls), with each block's
            projections of x as one GEMM (``FoxLM.fused_projections``: a stacked copy of those weights,
            most of the model's, held while decoding).
        callback: called with each step's tokens (B,) int64 on the device (for streaming; reading them
            synchronises); a view of the result, which later steps leave as it is.
        evict: decode with the evicting cache (``model.new_cache(..., evict=True)``: FoX Pro with ACP only),
            prefilling in chunks of ``prefill_chunk`` (default EVICT_PREFILL_CHUNK) with eviction between them.
        pool_fraction: the evicting cache's pool size (see ``PagedKVCache.allocate_paged``).
        memory_report: a dict that receives the evicting cache's ``memory_report()`` and ``summary()``
            (key "summary") at the end.
    Returns:
        For each prompt, a 1-D int64 CPU tensor: the prompt followed by its generated tokens.
    Raises:
        ValueError: no prompts, an empty prompt, token ids outside the vocabulary, max_new_tokens < 1, a
            prompt that with max_new_tokens does not fit max_len, bad sampling arguments, a CUDA graph
            off CUDA, eviction on a model without a static bound.
        CachePoolExhausted (a ValueError): the evicting cache's pool ran out (before any wrong token).
        TypeError: prompts of non-integer dtype.
    """
    check_sampling(temperature, top_k, top_p)
    max_new_tokens = _count(max_new_tokens, "max_new_tokens", 1)
    prefill_chunk = None if prefill_chunk is None else _count(prefill_chunk, "prefill_chunk", 1, " or None")
    max_len = None if max_len is None else _count(max_len, "max_len", 1, " or None")
    seed = None if seed is None else _count(seed, "seed", 0, " or None")
    vocab = model.config.vocab_size
    if eos_token_id is not None and (
        not isinstance(eos_token_id, numbers.Integral)
        or isinstance(eos_token_id, bool)
        or not 0 <= eos_token_id < vocab
    ):
        raise ValueError(f"eos_token_id must be None or one token id in [0, {vocab}), got {eos_token_id!r}")
    if not evict and (pool_fraction is not None or memory_report is not None):
        raise ValueError("pool_fraction and memory_report are options of the evicting cache: pass evict=True")
    device = model.embed.weight.device
    rows = _as_prompts(prompts, model.config.vocab_size, device)
    longest = max(len(p) for p in rows)
    max_len = longest + max_new_tokens if max_len is None else max_len
    cuda_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph needs a model on a CUDA device, not {device}")
    # The last token is never fed back: n new tokens need n - 1 positions past the prompt, and a CUDA graph's
    # warm-up one spare (it writes two steps ahead) where there is a graph (from 2 new tokens on).
    room = max_new_tokens - 1 + int(cuda_graph and max_new_tokens > 1)
    for i, p in enumerate(rows):
        if len(p) + room > max_len:
            raise ValueError(
                f"prompt {i} ({len(p)} tokens) plus max_new_tokens ({max_new_tokens}) exceeds max_len ({max_len})"
            )
    if seed is None:
        seed = int(torch.randint(2**62, ()))
    generator = torch.Generator(device=device).manual_seed(seed)
    sampler = functools.partial(sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)

    if evict:
        cache = model.new_cache(len(rows), max_len, evict=True, pool_fraction=pool_fraction)
        prefill_chunk = prefill_chunk or EVICT_PREFILL_CHUNK
    else:
        cache = model.new_cache(len(rows), max_len)
    first = sampler(prefill(model, cache, rows, prefill_chunk))
    if evict:
        cache.auto_prepare = False  # the steps read nothing back; decode_n_tokens prepares at its checks
        cache.prepare(CHECK_EVERY)
    # The cache now holds only what the model wrote, so the ops' value checks (host reads of the whole
    # cache per layer and token) have nothing left to find.
    checks = set_value_checks(False)
    try:
        with model.fused_projections() if compile else contextlib.nullcontext():
            run_block = compiled_block_step(pdl=dependent_launch_available(first.device)) if compile else None
            step = functools.partial(decode_one_token, model, cache, sampler=sampler, run_block=run_block)
            if cuda_graph and max_new_tokens > 1:
                step = CUDAGraphStep(step, cache, first, generator)
            new = decode_n_tokens(step, cache, first, max_new_tokens, eos_token_id=eos_token_id, callback=callback)
    finally:
        set_value_checks(checks)
    new = new.cpu()
    if evict and memory_report is not None:
        memory_report.update(cache.memory_report(), summary=cache.summary())
    return [torch.cat([p.cpu(), _trim(row, eos_token_id)]) for p, row in zip(rows, new, strict=True)]
