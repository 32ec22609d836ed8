"""FoxForCausalLM: a FoxLM as a transformers PreTrainedModel (AutoModelForCausalLM, save/load, generate).

The FoxLM is the submodule ``model``: state-dict keys are FoxLM's with the prefix ``model.``, and the
forward is FoxLM's (ACP and foxacp's kernels included). Padding is supported on the left (how decoder-only
models are batched for generation) and, in a forward that neither makes nor continues a cache (scoring,
training with labels), on the right: the real tokens of every row are packed into one sequence with document
offsets, so pad tokens never enter a forget gate or a token shift.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from transformers import CompileConfig, GenerationConfig, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from foxacp.model import FoxLM

from .cache import RIGHT_PADDING_ERROR, FoxCache, padding_side
from .config import FoxConfig
from .static import FoxStaticCache

# The output field (and forward argument) that carries the cache: renamed from past_key_values in transformers 5.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

# What a saved directory's auto_map names: a module that takes the classes from the installed foxacp package.
REMOTE_MODULE = "foxacp_remote"
REMOTE_SOURCE = '"""foxacp models for trust_remote_code: the classes of the installed foxacp package."""\n\n' + (
    "from foxacp.hf import FoxConfig, FoxForCausalLM  # noqa: F401\n"
)
AUTO_MAP = {"AutoConfig": "FoxConfig", "AutoModel": "FoxForCausalLM", "AutoModelForCausalLM": "FoxForCausalLM"}


def packed_logits(
    model: FoxLM, input_ids: Tensor, attention_mask: Tensor | None, *, right_padding: bool = False
) -> Tensor:
    """Logits (B, T, V) of the tokens where attention_mask (B, T) is 1: rows padded on the left (zeros first) or,
    with ``right_padding``, on the right (ones first; for a forward that neither makes nor continues a cache).

    Every row's real tokens form one document of a packed forward, so the logits are those each row alone
    would give. Logits at padded positions are 0.

    Raises:
        ValueError: attention_mask of another shape than input_ids, holding values other than 0 and 1, with a row
            of padding only, or padded other than on the left (or, with right_padding, on the right).
    """
    if attention_mask is None:
        return model(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(torch.long)
    side = padding_side(mask)
    if side == "none":
        return model(input_ids)
    if side == "right" and not right_padding:
        raise ValueError(RIGHT_PADDING_ERROR)
    lengths = mask.sum(1)
    keep = mask.bool()
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    packed = model(input_ids[keep][None], cu_seqlens=cu_seqlens, max_seqlen=int(lengths.max()))[0]
    logits = packed.new_zeros(*input_ids.shape, packed.shape[-1])
    logits[keep] = packed
    return logits


class FoxPreTrainedModel(PreTrainedModel):
    """Shared transformers plumbing: config class, weight init of missing weights."""

    config_class = FoxConfig
    base_model_prefix = "model"  # the FoxLM attribute; foxacp.load reads the keys by it (HF_PREFIX)
    _no_split_modules = ["Block"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: torch.nn.Module) -> None:
        # transformers' generic init gives FoxLM's (N(0, init_std), zero biases, unit norm gains) except for the
        # forget-gate bias, which starts at fgate_bias_init. transformers calls this only for modules that were
        # not loaded, and its init functions skip tensors already flagged as loaded.
        super()._init_weights(module)
        if isinstance(module, torch.nn.Linear) and any(module is block.attn.fgate for block in self.model.blocks):
            init.constant_(module.bias, self.config.fgate_bias_init)


class FoxForCausalLM(FoxPreTrainedModel, GenerationMixin):
    """A FoxLM (``self.model``) with transformers' causal-LM interface.

    forward(input_ids (B, T) int64, attention_mask (B, T) 0/1 left padding or None, labels (B, T) int64 or None)
    -> CausalLMOutputWithPast with logits (B, T, V) float and, with labels, the mean next-token cross entropy
    (labels shifted inside, -100 ignored, as in transformers' causal LMs). A forward that neither makes nor
    continues a cache (use_cache=False, labels, training) also takes right padding (logits 0 at the padding; its
    labels are usually -100); so does a plain ``model(ids)``, whose returned cache refuses to be continued over
    right-padded prompts; generate and an explicit use_cache=True refuse it. With use_cache (generate's default)
    the state lives in a FoxCache (foxacp's decoding cache) returned in the output and fed back; with
    use_cache=False every step recomputes the whole sequence. generate(..., cache_implementation="static") uses a
    FoxStaticCache instead (fixed size, the one-token step replayed as a CUDA graph on CUDA and compiled where
    transformers compiles); the model keeps it and reuses it for later calls of the same batch size and a
    length that fits, so a cache returned by one generate call is emptied by the next static one.
    """

    def __init__(self, config: FoxConfig) -> None:
        super().__init__(config)
        self.model = FoxLM(config.to_model_config())
        self._static_cache: FoxStaticCache | None = None
        self.post_init()

    @classmethod
    def from_foxlm(cls, model: FoxLM, **config_kwargs) -> FoxForCausalLM:
        """Wrap an existing FoxLM (its parameters are shared, not copied); config_kwargs go to FoxConfig."""
        if not isinstance(model, FoxLM):
            raise TypeError(f"model must be a FoxLM, got {type(model).__name__}")
        config = FoxConfig.from_model_config(model.config, **config_kwargs)
        with torch.device("meta"):
            hf = cls(config)
        hf.model = model
        return hf

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """transformers' save_pretrained, plus an ``auto_map`` in config.json and the small module it names, so that
        ``from_pretrained(..., trust_remote_code=True)`` finds these classes in the installed foxacp without
        ``import foxacp.hf``."""
        self.config.auto_map = {name: f"{REMOTE_MODULE}.{cls}" for name, cls in AUTO_MAP.items()}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            (Path(save_directory) / f"{REMOTE_MODULE}.py").write_text(REMOTE_SOURCE, encoding="utf-8")

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # FoX's state (cumulative gates, token-shift rows) is not a key/value pair per layer.
        return False

    def _prepare_cache_for_generation(
        self,
        generation_config: GenerationConfig,
        model_kwargs: dict,
        generation_mode,
        batch_size: int,
        max_cache_length: int,
    ) -> None:
        """generate's cache, in model_kwargs: a FoxCache, or a FoxStaticCache of max_cache_length tokens per row for
        cache_implementation="static" (the model's last one when it fits). A cache passed in or use_cache=False
        go through transformers' own checks.

        Raises:
            ValueError: another cache_implementation (quantized, offloaded, sliding window: not FoX's state).
        """
        args = (generation_config, model_kwargs, generation_mode, batch_size, max_cache_length)
        if model_kwargs.get(CACHE_FIELD) is not None or generation_config.use_cache is False:
            return super()._prepare_cache_for_generation(*args)
        implementation = generation_config.cache_implementation
        if implementation in (None, "dynamic"):
            model_kwargs[CACHE_FIELD] = FoxCache(self.model)
            return None
        if implementation != "static":
            raise ValueError(
                f"cache_implementation={implementation!r} is not supported by FoxForCausalLM: use 'dynamic' or 'static'"
            )
        rows = max(generation_config.num_beams or 1, generation_config.num_return_sequences or 1) * batch_size
        length = max(max_cache_length, getattr(generation_config, "max_cache_len", None) or 0)
        if self._static_cache is None or not self._static_cache.fits(rows, length):
            self._static_cache = None  # its buffers go before the new ones are allocated
            self._static_cache = FoxStaticCache(self.model, rows, length)
        cache = self._static_cache
        cache.reset()
        model_kwargs[CACHE_FIELD] = cache
        # Where transformers would compile the forward (a compileable cache on an accelerator, unless disabled),
        # the cache compiles its one-token step instead (see get_compiled_call).
        compiles = self._valid_auto_compile_criteria(model_kwargs, generation_config)
        config = generation_config.compile_config or self._default_compile_config()
        cache.compile_step(config.to_dict() if compiles else None)
        return None

    def get_compiled_call(self, compile_config: CompileConfig | None) -> Callable:
        """What generate calls for decode steps when it compiles: the forward itself, uncompiled.

        transformers' own version compiles the whole forward. Here the host-side part of a step (mask checks, the
        length count, the periodic gate rebase) stays eager and only the step the GPU runs is compiled, by the
        FoxStaticCache that _prepare_cache_for_generation set up with compile_config's options.
        """
        return self.__call__

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.model.embed = value

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.model.lm_head

    def set_output_embeddings(self, new_embeddings: torch.nn.Linear) -> None:
        self.model.lm_head = new_embeddings

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> torch.nn.Embedding:
        """transformers' resize of the embedding (V, d_model) and the untied LM head (V, d_model) to new_num_tokens
        rows (rounded up to pad_to_multiple_of): rows kept are unchanged, added rows are drawn from the old rows'
        mean and covariance (mean_resizing) or initialised as FoxLM's. config.vocab_size and the FoxLM's config
        take the new size, so that foxacp.generate, caches and save_pretrained see it. Returns the embedding."""
        embed = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.model.config = dataclasses.replace(self.model.config, vocab_size=self.config.vocab_size)
        self._static_cache = None  # captured over the old LM head
        return embed

    def prepare_inputs_for_generation(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, use_cache: bool | None = None, **kwargs
    ) -> dict:
        """The next forward's inputs: with a cache (made here at the first step) only the tokens it has not seen."""
        _refuse_outputs(kwargs, self.config)  # generate passes them here, not to forward
        cache = _cache_arg(kwargs)
        use_cache = getattr(self.config, "use_cache", True) if use_cache is None else use_cache
        if not use_cache:
            # Each step's forward would take a right-padded prompt, and the next token would follow its padding.
            if attention_mask is not None and padding_side(attention_mask.to(torch.long)) == "right":
                raise ValueError(RIGHT_PADDING_ERROR)
            return {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        cache = FoxCache(self.model) if cache is None else cache
        seen = cache.get_seq_length()
        new = _new_tokens(input_ids, attention_mask, seen, kwargs.get("next_sequence_length"))
        later_chunk = seen > 0 and attention_mask is not None and new.shape[1] > 1  # a prefill chunk, not a step
        if later_chunk and not bool(attention_mask[:, -new.shape[1] :].all()):
            raise ValueError("padding after the first prefill chunk is not supported: pad on the left, within it")
        return {
            "input_ids": new,
            # After the prompts generate only appends ones to the mask: passing it would cost a host read per step.
            "attention_mask": attention_mask if seen == 0 else None,
            "use_cache": True,
            CACHE_FIELD: cache,
        }

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: Tensor | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        num_items_in_batch: int | Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """See the class docstring. As in transformers' causal LMs: ``logits_to_keep`` (an int k > 0: the last k
        positions' logits; a 1-D tensor: those positions'; the loss still covers every position), and
        ``num_items_in_batch`` (what Trainer passes under gradient accumulation: the loss is then the sum over
        the labelled tokens divided by it, not their mean).

        Raises:
            ValueError: inputs_embeds, output_hidden_states or output_attentions (not supported), a cache that is
                not a FoxCache, or a bad attention_mask (right padding where a cache is made or continued).
        """
        if inputs_embeds is not None:
            raise ValueError("inputs_embeds is not supported by FoxForCausalLM: pass input_ids")
        _refuse_outputs(kwargs, self.config)
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, FoxCache):
            raise ValueError(f"the cache must be a foxacp.hf.FoxCache, got {type(cache).__name__}")
        if cache is not None and cache.model is not self.model:
            raise ValueError("the cache was made for another model (a FoxCache runs the FoxLM it was made with)")
        # use_cache=None means config.use_cache, as in transformers' causal LMs (not while training): the logits are
        # then the full forward's and the returned cache takes these tokens in at its first continuation, so a plain
        # forward keeps its exact logits and holds no buffers unless continued.
        defer = use_cache is None and cache is None and getattr(self.config, "use_cache", True) and labels is None
        defer = defer and not (self.training and torch.is_grad_enabled())
        if cache is None and use_cache:
            cache = FoxCache(self.model)
        if cache is not None:
            logits = cache.forward(input_ids, attention_mask)
        else:
            # No cache is made or continued (a deferred one refuses right-padded prompts when continued).
            logits = packed_logits(self.model, input_ids, attention_mask, right_padding=True)
        if defer:
            cache = FoxCache(self.model)
            cache.defer(input_ids, attention_mask)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                labels[:, 1:].flatten().to(logits.device),
                ignore_index=-100,
                reduction="mean" if num_items_in_batch is None else "sum",
            )
            if num_items_in_batch is not None:
                loss = loss / num_items_in_batch
        if isinstance(logits_to_keep, Tensor):
            logits = logits[:, logits_to_keep.to(logits.device)]
        elif logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        out = CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache})
        return out if (self.config.return_dict if return_dict is None else return_dict) else out.to_tuple()


def _refuse_outputs(kwargs: dict, config: PretrainedConfig) -> None:
    """Raise ValueError for hidden states or attentions asked for (in the call or the config): FoxLM's kernels keep
    neither, and returning None where a caller expects them hides that."""
    for name in ("output_hidden_states", "output_attentions"):
        if kwargs.get(name) or (kwargs.get(name) is None and getattr(config, name, False)):
            raise ValueError(f"{name} is not supported by FoxForCausalLM")


def _cache_arg(kwargs: dict) -> Cache | None:
    """The cache handed over as ``cache`` (recent transformers 5 releases) or ``past_key_values`` (earlier ones)."""
    for name in ("cache", "past_key_values"):
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def _new_tokens(input_ids: Tensor, attention_mask: Tensor | None, seen: int, next_len: int | None) -> Tensor:
    """The tokens of ``input_ids`` (B, T) that a cache holding ``seen`` tokens has not seen. transformers passes the
    whole sequence (its mask as long), or only the new tokens with the mask of the whole sequence (a prefill chunk,
    or a cache continued by hand), and may say how many are new (``next_sequence_length``). Raises ValueError when
    none are new."""
    if next_len:
        new = input_ids[:, -next_len:]
    elif attention_mask is not None:
        new = input_ids[:, seen:] if attention_mask.shape[1] == input_ids.shape[1] else input_ids
    else:
        new = input_ids[:, seen:] if input_ids.shape[1] > seen else input_ids
    if new.shape[1] == 0:
        raise ValueError(f"no new tokens: the cache holds {seen} and input_ids has {input_ids.shape[1]}")
    return new
