"""Inference: loading a trained model (``load``), generation and sampling with the decoding cache."""

from .generate import decode_n_tokens, decode_one_token, generate, prefill
from .load import load
from .sampling import sample

__all__ = ["decode_n_tokens", "decode_one_token", "generate", "load", "prefill", "sample"]
