"""Without a GPU, Triton kernels run in the interpreter: the variable must be set before any kernel import."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # triton.language's own @jit helpers take the mode at import: import it now, so that a test that unsets the
    # variable for a while (to time the PyTorch paths) cannot make it import in compiled mode.
    import triton.language  # noqa: F401


@pytest.fixture(autouse=True)
def _value_checks_on():
    """Every test starts with foxacp's gate value checks on (the trainer and benchmark switch them off)."""
    from foxacp.ops import set_value_checks

    previous = set_value_checks(True)
    yield
    set_value_checks(previous)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
