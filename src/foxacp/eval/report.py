"""``foxacp eval``: loss by position and passkey retrieval of a trained model, with ACP and optionally exactly.

record = run_eval("runs/125m", "held_out/", "eval_out/", compare_exact=True)   # writes eval.json + PNGs
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from foxacp.data.corpus import looks_binary
from foxacp.io import REPO, atomic_write, git_commit
from foxacp.model import FoxLM

from .long_loss import loss_by_position, read_documents
from .passkey import FILLER, fixed_tokens, greedy_answers, passkey_trials, run_passkey
from .plot import plot_loss_by_position, plot_passkey_heatmap

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LENGTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # passkey lengths in training contexts by default: up to and beyond it


def exact_twin(model: FoxLM) -> FoxLM:
    """A copy of ``model`` with the same weights, device and dtype, and ACP switched off (``config.acp=False``:
    every layer passes log_eps=None, exact attention)."""
    weight = model.embed.weight
    twin = FoxLM(dataclasses.replace(model.config, acp=False))
    twin.load_state_dict(model.state_dict())
    return twin.to(device=weight.device, dtype=weight.dtype).eval()


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model_and_tokenizer(path: str | Path, device: str, dtype: str = "float32") -> tuple[FoxLM, Any, int]:
    """(model, tokenizer, training context) of a run or checkpoint directory, the model's parameters cast to
    ``dtype`` (a DTYPES name). The tokenizer is the run's own copy (``RUN/tokenizer.json``, written when it
    trained); runs from before that rebuild it from the spec in the checkpoint's TrainConfig (a trained BPE from
    its cache, which needs the training corpus).

    Raises CheckpointError (no usable checkpoint), ValueError (a bad device, dtype or tokenizer spec)."""
    from foxacp.infer import load

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    model = load(path, device=device, dtype=DTYPES[dtype])
    return model, *run_tokenizer(path)


def run_tokenizer(path: str | Path) -> tuple[Any, int]:
    """(tokenizer, training context) of a run or checkpoint directory: see ``load_model_and_tokenizer``."""
    from foxacp.data import build_tokenizer, load_corpus
    from foxacp.data.tokenizer import RUN_TOKENIZER
    from foxacp.train.checkpoint import home_run_dir, read_meta, resolve_checkpoint
    from foxacp.train.config import TrainConfig

    export = Path(path)
    if not (export / "meta.json").is_file() and _is_transformers_export(export):  # foxacp export-hf's directory
        if not (export / RUN_TOKENIZER).is_file():
            raise ValueError(
                f"{export} is a transformers export without a tokenizer (a byte-tokenizer run's, or one exported "
                "before export-hf wrote tokenizers): use the run directory it was exported from"
            )
        settings = json.loads((export / "tokenizer_config.json").read_text(encoding="utf-8"))
        return build_tokenizer(f"hf:{export / RUN_TOKENIZER}"), int(settings["model_max_length"])
    ckpt = resolve_checkpoint(path)
    cfg = TrainConfig.from_dict(read_meta(ckpt, verify=False)["train_config"])
    run_dir = home_run_dir(ckpt)
    if run_dir is not None and (saved := run_dir / RUN_TOKENIZER).is_file():
        return build_tokenizer(f"hf:{saved}"), cfg.seq_len
    corpus = load_corpus(cfg.corpus) if cfg.tokenizer.startswith("bpe:") else None
    return build_tokenizer(cfg.tokenizer, corpus=corpus, cache_dir=Path(cfg.cache_dir).expanduser()), cfg.seq_len


def _is_transformers_export(path: Path) -> bool:
    """Whether ``path`` holds a foxacp model saved for transformers (config.json of model_type "foxacp")."""
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type") == "foxacp"
    except (OSError, ValueError, AttributeError):
        return False


def provenance(path: str | Path, data: str | Path, device: torch.device) -> dict[str, Any]:
    """What every output names: the model path and the checkpoint it resolved to (a run's ``latest`` moves as
    it trains; None for a transformers folder), the data, the foxacp commit and the device."""
    from foxacp.train.checkpoint import CheckpointError, resolve_checkpoint

    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    try:
        checkpoint = str(resolve_checkpoint(Path(path).expanduser()).resolve())
    except CheckpointError:
        checkpoint = None
    return {
        "model": str(Path(path).expanduser().resolve()),
        "checkpoint": checkpoint,
        "data": str(Path(data).expanduser().resolve()) if data else "built-in filler",
        "commit": git_commit(REPO),
        "device": name,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),  # orders two sets of one day in the index
    }


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def run_eval(
    path: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    max_len: int | None = None,
    compare_exact: bool = False,
    compare_evict: bool = False,
    passkey_lengths: Sequence[int] | None = None,
    depths: Sequence[float] = DEPTHS,
    trials: int = 4,
    digits: int = 5,
    seed: int = 0,
    filler: str | Path | None = None,
    window: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the model at ``path`` on the documents at ``data``; write ``out``/eval.json and the PNGs.

    Args:
        path: run or checkpoint directory (:func:`foxacp.load`); dtype: "float32", "bfloat16" or "float16".
        data: a text file (one document) or a folder of text files (held-out long documents).
        max_len: positions scored per document (default 4x the training context).
        compare_exact: also run the same weights exactly (ACP off) and record both and their difference.
        compare_evict: also answer the passkey trials with the evicting cache (FoX Pro with ACP; the loss by
            position is a full forward, which eviction does not change) and compare the answers one by one.
        passkey_lengths: prompt lengths in tokens (default 1/4, 1/2, 1, 2 and 4 training contexts, those <= max_len).
        depths: key depths in [0, 1]; trials: prompts per (length, depth); digits: key length; seed: key draws.
        filler: a text file for the haystack (default: built-in filler).
        window: moving-average window of the position plots (default max_len // 50, at least 1).

    Returns the record written to eval.json: {"meta", "per_position", "passkey", and with compare_exact
    "exact": {"per_position", "passkey"}, "comparison": {"loss_difference", "passkey_agreement", ...}}, and with
    compare_evict "evict": {"passkey" (with "memory": the share of a full cache held, per batch and mean)},
    "evict_comparison": {"passkey_same_answer", "passkey_accuracy"}.

    Raises:
        FileNotFoundError: ``data`` or ``filler`` does not exist.
        ValueError: bad numbers (max_len, trials, digits, lengths, depths), documents without text or without a
            document of 2 tokens, compare_exact on a model without ACP.
        CheckpointError: no usable checkpoint at ``path``.
    """
    for name, value in (("trials", trials), ("digits", digits)):
        _check_positive(name, value)
    if max_len is not None:
        _check_positive("max_len", max_len)
    docs = read_documents(data)
    filler_text = FILLER
    if filler is not None:
        if not Path(filler).is_file():
            raise FileNotFoundError(f"filler file {str(filler)!r} does not exist")
        if looks_binary(Path(filler)):
            raise ValueError(f"filler file {str(filler)!r} looks binary, not text")
        filler_text = Path(filler).read_text(encoding="utf-8", errors="replace")
    out = Path(out)
    model, tokenizer, train_len = load_model_and_tokenizer(path, device, dtype)
    if compare_evict:  # refused now, not after hours of evaluation
        model.check_can_evict()
    if compare_exact and model.config.attn_log_eps is None:
        raise ValueError(
            "compare_exact: this model runs exactly already (trained without ACP, or without a forget gate): there "
            "is no ACP run to compare"
        )
    max_len = max_len or 4 * train_len
    # Default lengths leave at least as much filler as fixed text, so a small context still hides the key.
    shortest = 2 * fixed_tokens(tokenizer, digits)
    if passkey_lengths:
        lengths = list(passkey_lengths)
    else:
        lengths = sorted({max(shortest, int(f * train_len)) for f in LENGTH_FACTORS})
        lengths = [n for n in lengths if n <= max_len] or lengths[:1]
    window = max(1, max_len // 50) if window is None else window
    _check_positive("window", window)
    token_docs = tokenizer.encode_batch(docs)
    if max(map(len, token_docs)) < 2:  # loss_by_position would refuse it, after the folder was made
        raise ValueError(f"no document at {data} has 2 tokens: nothing to score")
    passkey = passkey_trials(
        tokenizer, lengths=lengths, depths=depths, trials=trials, seed=seed, digits=digits, filler=filler_text
    )
    out.mkdir(parents=True, exist_ok=True)  # once every argument was checked: a refused call leaves nothing

    def passkey_record(m: FoxLM, evict: bool = False) -> dict[str, Any]:
        memory: list[dict[str, Any]] = []
        answer = functools.partial(
            greedy_answers, m, tokenizer, digits=digits, progress=progress, evict=evict, memory=memory
        )
        record = {"seed": seed, "digits": digits, "trials_per_cell": trials, **run_passkey(answer, passkey)}
        if evict:  # what the evicting cache held at the end of each batch, against a full cache
            held = sum(b["fraction_held"] * b["prompts"] for b in memory) / sum(b["prompts"] for b in memory)
            record["memory"] = {"fraction_held_mean": held, "batches": memory}
        return record

    def evaluate_one(m: FoxLM) -> dict[str, Any]:
        pos = loss_by_position(m, token_docs, max_len=max_len, progress=progress)
        return {"per_position": pos, "passkey": passkey_record(m)}

    meta = provenance(path, data, model.embed.weight.device)
    meta.update(
        filler=str(Path(filler).resolve()) if filler else "built-in",
        training_context=train_len,
        tokenizer=tokenizer.name,
        acp=model.config.acp,
        log_eps=model.config.attn_log_eps,
        variant=model.config.variant,
        dtype=dtype,
    )
    record: dict[str, Any] = {"meta": meta, **evaluate_one(model)}
    if compare_exact:
        record["exact"] = evaluate_one(exact_twin(model))
        record["comparison"] = compare(record, record["exact"])
    if compare_evict:
        record["evict"] = {"passkey": passkey_record(model, evict=True)}
        record["evict_comparison"] = compare_passkey(record["passkey"], record["evict"]["passkey"], "evict")
    # An earlier evaluation's files go first (eval.json first: written last, it marks a complete folder), so
    # that no plot of another run (an earlier --compare-exact, say) stays beside this one's.
    for name in EVAL_FILES:
        (out / name).unlink(missing_ok=True)
    _write_plots(record, out, window)
    atomic_write(out / "eval.json", json.dumps(record, indent=1))
    return record


def compare(pruned: dict[str, Any], exact: dict[str, Any]) -> dict[str, Any]:
    """ACP minus exact: loss difference per position (None where no document reaches), its largest magnitude,
    the overall loss difference, and the share of passkey trials where both gave the same answer."""
    a, b = pruned["per_position"]["loss_by_position"], exact["per_position"]["loss_by_position"]
    diff = [None if x is None or y is None else x - y for x, y in zip(a, b, strict=True)]
    return {
        "loss_difference": diff,
        "max_abs_loss_difference": max_abs([d for d in diff if d is not None]),
        "mean_loss_difference": pruned["per_position"]["loss"] - exact["per_position"]["loss"],
        **compare_passkey(pruned["passkey"], exact["passkey"], "exact"),
    }


def max_abs(values: Sequence[float]) -> float:
    """The largest magnitude, NaN if any value is NaN (Python's max keeps a NaN only when it comes first)."""
    if any(math.isnan(v) for v in values):
        return math.nan
    return max((abs(v) for v in values), default=0.0)


def compare_passkey(base: dict[str, Any], other: dict[str, Any], name: str) -> dict[str, Any]:
    """The share of passkey trials where ``other`` gave ``base``'s answer, and both accuracies ("acp", name)."""
    same = [x["answer"] == y["answer"] for x, y in zip(base["trials"], other["trials"], strict=True)]
    return {
        "passkey_same_answer": sum(same) / len(same),
        "passkey_accuracy": {"acp": base["overall"], name: other["overall"]},
    }


EVAL_FILES = (  # what `evaluate` writes into its folder; eval.json first
    "eval.json",
    "loss_by_position.png",
    "prefix_loss.png",
    "passkey.png",
    "passkey_evict.png",
    "passkey_exact.png",
    "loss_difference.png",
)


def _write_plots(record: dict[str, Any], out: Path, window: int) -> None:
    m = record["meta"]
    commit = m["commit"][:10] + ("-dirty" if m["commit"].endswith("-dirty") else "")
    names = f"{m['model']}\ndata {m['data']} | commit {commit} | {m['device']}"
    train_len = m["training_context"]
    runs = {"ACP" if m["log_eps"] is not None else "as trained (exact)": record}
    if "exact" in record:
        runs["exact"] = record["exact"]
    for key, what, ylabel, w in (
        ("loss_by_position", "loss by position", "loss (nats/token)", window),
        ("prefix_loss", "mean loss over positions 0..t", "prefix mean loss (nats/token)", 1),
    ):
        plot_loss_by_position(
            out / f"{key}.png",
            {label: r["per_position"][key] for label, r in runs.items()},
            train_len=train_len,
            window=w,
            title=f"{what}, {record['per_position']['documents']} documents\n{names}",
            ylabel=ylabel,
        )
    plot_passkey_heatmap(out / "passkey.png", record["passkey"], train_len=train_len, title=f"passkey\n{names}")
    if "evict" in record:
        plot_passkey_heatmap(
            out / "passkey_evict.png",
            record["evict"]["passkey"],
            train_len=train_len,
            title=f"passkey, evicting\n{names}",
        )
    if "exact" in record:
        plot_passkey_heatmap(
            out / "passkey_exact.png", record["exact"]["passkey"], train_len=train_len, title=f"passkey, exact\n{names}"
        )
        plot_loss_by_position(
            out / "loss_difference.png",
            {"ACP - exact": record["comparison"]["loss_difference"]},
            train_len=train_len,
            window=window,
            title=f"loss difference by position, ACP - exact\n{names}",
            ylabel="loss difference (nats/token)",
        )
