"""Tokens/s of generate() through transformers (FoxForCausalLM + FoxCache) against foxacp.generate.

    python -m foxacp.hf.bench --preset 125M --batch 1 --prompt-len 512 --new-tokens 256 --dtype bfloat16

A randomly initialised model of the preset (the speed does not depend on the weights), greedy decoding, one
warm-up call of each first; prints one JSON line with both rates and the share of generated tokens on which the
two agree (greedy paths on the same weights; low precision may let near-ties differ).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

import torch

import foxacp
from foxacp.model import FoxLM, ModelConfig

from .modeling import FoxForCausalLM


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def run(
    preset: str, batch: int, prompt_len: int, new_tokens: int, device: str, dtype: str, vocab_size: int = 32768
) -> dict:
    """Both generate paths on one model; returns the result record (see the module docstring)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    with dev:
        lm = FoxLM(ModelConfig.from_preset(preset, vocab_size=vocab_size))
    lm = lm.to(dtype=getattr(torch, dtype)).eval()
    hf = FoxForCausalLM.from_foxlm(lm).eval()
    prompts = torch.randint(0, vocab_size, (batch, prompt_len), device=dev)

    def ours() -> torch.Tensor:
        return torch.stack(foxacp.generate(lm, prompts, new_tokens))[:, prompt_len:]

    def theirs() -> torch.Tensor:
        with torch.no_grad():
            out = hf.generate(prompts, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return out[:, prompt_len:].cpu()

    rates = {}
    outputs = {}
    for name, fn in (("foxacp", ours), ("hf", theirs)):
        fn()  # warm-up: kernels compiled, CUDA graph captured
        outputs[name], seconds = _timed(fn, dev)
        rates[name] = batch * new_tokens / seconds
    agree = (outputs["foxacp"] == outputs["hf"]).float().mean().item()
    return {
        "preset": preset,
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "dtype": dtype,
        "transformers": __import__("transformers").__version__,
        "tokens_per_s_foxacp": rates["foxacp"],
        "tokens_per_s_hf": rates["hf"],
        "greedy_agreement": agree,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="125M")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    p.add_argument("--vocab-size", type=int, default=32768)
    a = p.parse_args(argv)
    record = run(a.preset, a.batch, a.prompt_len, a.new_tokens, a.device, a.dtype, a.vocab_size)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
