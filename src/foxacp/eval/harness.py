"""lm-evaluation-harness for foxacp models: the three request types on a FoxLM (FoxScorer, no lm_eval needed),
and the ``lm_eval`` model over it (needs the optional ``lm_eval`` package).

    scorer = FoxScorer(model, tokenizer, max_len=4096)
    scorer.loglikelihood([("The cat sat on the", " mat")])     # [(log p, is greedy)]

    import lm_eval
    lm_eval.simple_evaluate(model=foxacp_lm("runs/125m", device="cuda", dtype="bfloat16"), tasks=[...])

    import foxacp.eval.harness  # registers "foxacp" with lm_eval, where it is installed
    lm_eval.simple_evaluate(model="foxacp", model_args="path=runs/125m,dtype=bfloat16", tasks=[...])

Importing this module registers "foxacp" in lm_eval's model registry as a lazy placeholder (lm_eval's own
mechanism for its models): lm_eval's registry and its model list are imported here, and foxacp's model class is
built when lm_eval first asks for it. ``import foxacp`` does not import this module, so it never imports lm_eval.
"""

from __future__ import annotations

import dataclasses
import importlib
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from foxacp.data import Tokenizer
from foxacp.infer.sampling import check_sampling
from foxacp.model import FoxLM

# lm_eval's names for the number of tokens to generate, in its order of priority (lm_eval.models.utils).
MAX_TOKENS_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
# The generation options generate_until honours; any other is refused, as transformers' generate refuses what it
# cannot use when lm_eval's HF model hands the options over to it.
GEN_KEYS = frozenset({"until", "do_sample", "temperature", "top_k", "top_p", "num_beams", *MAX_TOKENS_KEYS})


@dataclasses.dataclass(frozen=True)
class GenOptions:
    """One generate_until request's options: stop strings, tokens to generate, and foxacp.generate's sampling
    arguments (temperature 0 is greedy; top_k and top_p None cut nothing)."""

    until: list[str]
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None


def gen_options(options: dict[str, Any], default_max_new_tokens: int = 256) -> GenOptions:
    """The GenOptions of lm_eval's ``gen_kwargs``, read as lm_eval's HF model reads them: ``until`` a string or
    list of strings; ``max_gen_toks`` or an alias (MAX_TOKENS_KEYS); ``do_sample`` False (or unset with
    temperature 0, the default) is greedy, True samples at ``temperature`` (default 1; 0 is greedy again);
    ``top_k`` (0 or None: no cut) and ``top_p`` (1 or None: no cut) as in transformers; ``num_beams`` 1 only
    (some tasks say so; foxacp.generate has no beam search).

    Raises:
        ValueError: a key outside GEN_KEYS (named, with the ones taken), or a value of the wrong type or range.
    """
    unknown = sorted(set(options) - GEN_KEYS)
    if unknown:
        raise ValueError(
            f"generate_until does not support the generation options {unknown}; it takes {sorted(GEN_KEYS)}"
        )
    if options.get("num_beams", 1) != 1:
        raise ValueError(f"num_beams must be 1 (generate_until has no beam search), got {options['num_beams']!r}")
    until = options.get("until") or []
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, (list, tuple)) or not all(isinstance(u, str) for u in until):
        raise ValueError(f"until must be a string or a list of strings, got {options.get('until')!r}")
    n = next((options[k] for k in MAX_TOKENS_KEYS if options.get(k) is not None), default_max_new_tokens)
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"max_gen_toks must be an integer >= 1, got {n!r}")
    do_sample = options.get("do_sample")
    if do_sample is not None and not isinstance(do_sample, bool):
        raise ValueError(f"do_sample must be True, False or None, got {do_sample!r}")
    temperature = options.get("temperature")
    temperature = (1.0 if do_sample else 0.0) if temperature is None else temperature
    top_k, top_p = options.get("top_k"), options.get("top_p")
    top_k = None if top_k == 0 else top_k
    top_p = None if top_p == 1 else top_p
    check_sampling(temperature, top_k, top_p)
    if do_sample is False:
        temperature = 0.0
    return GenOptions(list(until), int(n), float(temperature), top_k, top_p)


class FoxScorer:
    """Log-likelihoods and generation of ``model`` over text, as lm-evaluation-harness asks for them.

    ``max_len``: the most tokens one forward sees (longer inputs keep their last ``max_len`` tokens for
    ``loglikelihood``; ``loglikelihood_rolling`` scores them in windows). An empty context starts from EOS.
    ``batch_size``: ``loglikelihood`` requests per forward. ``seed``: where the sampling of ``generate_until``
    starts (its i-th request draws with seed + i), so a run samples the same text every time.
    """

    def __init__(self, model: FoxLM, tokenizer: Tokenizer, *, max_len: int, batch_size: int = 1, seed: int = 0) -> None:
        if not isinstance(max_len, int) or max_len < 2:
            raise ValueError(f"max_len must be an int >= 2, got {max_len!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.seed = seed
        self.device = model.embed.weight.device

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """The tokens of a (context, continuation) request, split as lm-evaluation-harness splits them: the
        context's trailing whitespace joins the continuation, and the whole text is encoded once and cut after the
        context's own tokens, so a subword tokenizer scores the continuation's tokens as they occur in the text
        (encoded apart, "Answer: " + "Paris" would score a lone space token and a split word). An empty context
        is EOS, the continuation encoded alone."""
        stripped = context.rstrip()
        continuation, context = context[len(stripped) :] + continuation, stripped
        if not context:
            return [self.tokenizer.eos_id], self.tokenizer.encode(continuation)
        ctx = self.tokenizer.encode(context)
        return ctx, self.tokenizer.encode(context + continuation)[len(ctx) :]

    @torch.no_grad()
    def _logprobs(self, ids: list[int]) -> Tensor:
        """log p of every token after the first given those before it: (len(ids) - 1, vocab) float32."""
        x = torch.tensor([ids[:-1]], dtype=torch.long, device=self.device)
        return F.log_softmax(self.model(x)[0].float(), -1)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Per (context, continuation): sum of log p of the continuation's tokens given the context (tokens as
        ``encode_pair`` splits them), and whether greedy decoding would have produced exactly those tokens.
        Requests run ``batch_size`` at a time, longest first, right-padded (a causal model's scores of a sequence
        do not depend on what follows it). Raises ValueError for a continuation of no tokens or of more than
        ``max_len``."""
        seqs = []
        for context, continuation in requests:
            ctx, cont = self.encode_pair(context, continuation)
            if not cont:
                raise ValueError(f"the continuation {continuation!r} encodes to no tokens")
            if len(cont) > self.max_len:
                raise ValueError(f"the continuation is {len(cont)} tokens, more than max_len={self.max_len}")
            seqs.append(((ctx + cont)[-(self.max_len + 1) :], len(cont)))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
        for start in range(0, len(order), self.batch_size):
            group = order[start : start + self.batch_size]
            logps = self._batch_logprobs([seqs[i][0] for i in group])
            for logp, i in zip(logps, group, strict=True):
                ids, n = seqs[i]
                logp = logp[len(ids) - 1 - n : len(ids) - 1]
                target = torch.tensor(ids[-n:], device=logp.device)
                score = logp.gather(-1, target[:, None]).sum().item()
                out[i] = (score, bool((logp.argmax(-1) == target).all()))
        return out

    @torch.no_grad()
    def _batch_logprobs(self, seqs: list[list[int]]) -> Tensor:
        """:meth:`_logprobs` of several sequences at once: (len(seqs), longest - 1, vocab), right-padded with EOS
        (rows past a sequence's own length are padding)."""
        width = max(map(len, seqs)) - 1
        x = torch.full((len(seqs), width), self.tokenizer.eos_id, dtype=torch.long)
        for row, ids in zip(x, seqs, strict=True):
            row[: len(ids) - 1] = torch.tensor(ids[:-1])
        return F.log_softmax(self.model(x.to(self.device)).float(), -1)

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Per text: log p of all its tokens, the first given EOS. Texts longer than ``max_len`` are scored in
        windows of ``max_len`` predictions, each window conditioned on the ``max_len`` // 2 tokens before it."""
        out = []
        for text in texts:
            ids = [self.tokenizer.eos_id, *self.tokenizer.encode(text)]
            total, done = 0.0, 1  # ids[:done] are scored (the EOS is given, not predicted)
            while done < len(ids):
                context = min(done - 1, self.max_len // 2)  # tokens before the first one predicted
                stop = min(len(ids), done + self.max_len - context)
                window = ids[done - 1 - context : stop]
                logp = self._logprobs(window)[-(stop - done) :]
                target = torch.tensor(ids[done:stop], device=logp.device)
                total += logp.gather(-1, target[:, None]).sum().item()
                done = stop
            out.append(total)
        return out

    def generate_until(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
        """Per (context, gen_kwargs): the continuation by foxacp.generate, greedy or sampled as ``gen_options``
        reads gen_kwargs (the i-th request with seed ``self.seed + i``), cut before the first of its stop strings.
        A context longer than max_len less the tokens to generate keeps its last tokens (with a warning).

        Raises:
            ValueError: generation options that ``gen_options`` refuses (unknown keys included).
        """
        from foxacp.infer import generate

        every = [gen_options(options) for _, options in requests]  # all refused before any is generated
        out = []
        for i, ((context, _), opts) in enumerate(zip(requests, every, strict=True)):
            n = opts.max_new_tokens
            ctx = self.tokenizer.encode(context) or [self.tokenizer.eos_id]
            room = max(1, self.max_len - n)
            if len(ctx) > room:
                warnings.warn(
                    f"generate_until keeps the last {room} of the prompt's {len(ctx)} tokens (max_len {self.max_len} "
                    f"less max_gen_toks {n})",
                    stacklevel=2,
                )
                ctx = ctx[-room:]
            (ids,) = generate(
                self.model,
                [ctx],
                n,
                temperature=opts.temperature,
                top_k=opts.top_k,
                top_p=opts.top_p,
                eos_token_id=self.tokenizer.eos_id,
                seed=self.seed + i,
            )
            text = self.tokenizer.decode(ids[len(ctx) :].tolist())
            cuts = [text.index(u) for u in opts.until if u and u in text]
            out.append(text[: min(cuts)] if cuts else text)
        return out


def foxacp_lm(
    path: str,
    device: str = "cpu",
    dtype: str = "float32",
    max_len: int | None = None,
    batch_size: int = 1,
    seed: int = 0,
) -> Any:
    """The lm_eval model (an ``lm_eval.api.model.LM``) of the run or checkpoint at ``path``; ``max_len`` defaults
    to the training context; ``batch_size``: loglikelihood requests per forward; ``seed``: generate_until's
    sampling seed (FoxScorer). Raises ImportError without the optional lm_eval package."""
    from .report import load_model_and_tokenizer

    model, tokenizer, train_len = load_model_and_tokenizer(path, device, dtype)
    scorer = FoxScorer(model, tokenizer, max_len=max_len or train_len, batch_size=batch_size, seed=seed)
    return _lm_class()(scorer)


# The name of the model in lm_eval's registry (``--model foxacp``).
LM_EVAL_NAME = "foxacp"


def _lm_class() -> type:
    """lm_eval's LM subclass over a FoxScorer, registered as LM_EVAL_NAME (made once, on first use; also this
    module's attribute ``FoxacpLM``, which the registry's placeholder names)."""
    global _LM
    if _LM is not None:
        return _LM
    try:
        from lm_eval.api.model import LM
        from lm_eval.api.registry import register_model
    except ImportError as e:
        raise ImportError(
            "the lm-evaluation-harness adapter needs the optional package lm_eval: pip install lm-eval"
        ) from e

    class FoxacpLM(LM):
        """lm_eval's model interface over :class:`FoxScorer` (requests carry their arguments in ``.args``)."""

        def __init__(self, scorer: FoxScorer) -> None:
            super().__init__()
            self.scorer = scorer

        @classmethod
        def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> FoxacpLM:
            """``--model_args path=RUN,dtype=...,max_len=...,batch_size=...,seed=...``; lm_eval's own --device and
            --batch_size (``additional_config``) apply where the model args do not set them ("auto" is 1)."""
            args = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
            return cls.create_from_arg_obj(args, additional_config)

        @classmethod
        def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> FoxacpLM:
            """The model args as a dict (what lm_eval's command line and ``simple_evaluate(model_args={...})``
            pass); the same keys and defaults as ``create_from_arg_string``."""
            args: dict[str, Any] = dict(arg_dict)
            extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
            if "device" in extra:
                args.setdefault("device", str(extra["device"]))
            batch = str(args.get("batch_size", extra.get("batch_size", 1)))
            args["batch_size"] = 1 if batch.startswith("auto") else int(batch)
            for name in ("max_len", "seed"):
                if name in args:
                    args[name] = int(args[name])
            return foxacp_lm(**args)

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            return self.scorer.loglikelihood([r.args for r in requests])

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            return self.scorer.loglikelihood_rolling([r.args[0] for r in requests])

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            return self.scorer.generate_until([r.args for r in requests])

    _LM = register_model(LM_EVAL_NAME)(FoxacpLM)
    return _LM


def __getattr__(name: str) -> Any:
    """``FoxacpLM``, the lm_eval model class, built on first access (what lm_eval's registry placeholder loads)."""
    if name == "FoxacpLM":
        return _lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_with_lm_eval() -> bool:
    """Register LM_EVAL_NAME with lm_eval if it can be imported; returns whether it is registered.

    lm_eval's registries with lazy placeholders get ``"foxacp.eval.harness:FoxacpLM"`` (foxacp's lm_eval class is
    not built); older ones, a plain dict, get the class itself. lm_eval's own models are registered first: its
    ``get_model`` loads them only into an empty registry, so a registry holding "foxacp" alone would hide them.
    """
    try:
        registry = importlib.import_module("lm_eval.api.registry")
    except ImportError:
        return False
    models = getattr(registry, "model_registry", None)
    if models is None or not hasattr(models, "register"):
        _lm_class()
        return True
    importlib.import_module("lm_eval.models")
    if LM_EVAL_NAME not in models:
        models.register(LM_EVAL_NAME, target=f"{__name__}:FoxacpLM")
    return True


_LM: type | None = None
register_with_lm_eval()
