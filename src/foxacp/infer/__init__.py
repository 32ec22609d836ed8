"""Inference: loading a trained model (``load``)."""

from .load import load

__all__ = ["load"]
