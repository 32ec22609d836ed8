"""foxacp.load: a run directory, its checkpoints folder or one checkpoint -> the model, with clear errors."""

from __future__ import annotations

import pytest
import torch

import foxacp
from foxacp.train import CheckpointError
from foxacp.train.loop import train
from tests.train.conftest import cache_dir, corpus_dir, one_thread  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus_dir, cache_dir):  # noqa: F811
    from foxacp.train.config import parse_overrides, preset_config
    from tests.train.conftest import SMALL

    out = tmp_path_factory.mktemp("load") / "run"
    base = [f"corpus={corpus_dir}", f"cache_dir={cache_dir}", f"out={out}", "steps=2", "ckpt_every=1"]
    train(parse_overrides(preset_config("tiny"), [*SMALL, *base]))
    return out


def test_run_checkpoints_and_checkpoint_directories_load_the_same_model(run_dir):
    model = foxacp.load(run_dir)
    assert isinstance(model, foxacp.model.FoxLM) and not model.training
    for path in (run_dir / "checkpoints", run_dir / "checkpoints" / "step_000002"):
        other = foxacp.load(path)
        for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    older = foxacp.load(run_dir / "checkpoints" / "step_000001")
    assert not torch.equal(older.embed.weight, model.embed.weight)  # the latest, not any, checkpoint
    wide = foxacp.load(run_dir, dtype=torch.float64)
    assert wide.embed.weight.dtype == torch.float64
    assert torch.equal(wide.embed.weight, model.embed.weight.double())
    ids = torch.randint(0, 64, (1, 8))
    assert model(ids).shape == (1, 8, model.config.vocab_size)


def test_a_path_that_is_neither_says_what_was_expected(tmp_path, run_dir):
    with pytest.raises(CheckpointError, match="does not exist"):
        foxacp.load(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"expected a checkpoint directory \(with meta.json\) or a run directory"):
        foxacp.load(tmp_path)
    with pytest.raises(TypeError, match="dtype"):
        foxacp.load(run_dir, dtype=torch.int64)
    with pytest.raises(ValueError, match="not a device name"):
        foxacp.load(run_dir, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            foxacp.load(run_dir, device="cuda")
