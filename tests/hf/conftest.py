import pytest

from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)

pytest.importorskip("transformers")


@pytest.fixture
def tiny_config():
    """A two-layer model config of the given variant (head_dim 32, vocab 64)."""
    from foxacp.model import ModelConfig

    def make(variant: str = "fox_pro", **kw) -> ModelConfig:
        return ModelConfig(vocab_size=64, n_layers=2, d_model=64, n_heads=2, variant=variant, **kw)

    return make
