"""A fresh run refuses a directory holding a config.json that is not a training config (an exported model's), instead
of replacing it."""

from __future__ import annotations

import contextlib
import json

from foxacp.train import RunDirError
from foxacp.train.loop import train
from tests.train.run_helpers import FAST


def test_a_fresh_run_does_not_replace_a_config_json_that_is_not_a_run_config(small_config, tmp_path):
    out = tmp_path / "hf-export"
    out.mkdir()
    theirs = json.dumps({"model_type": "foxlm", "architectures": ["FoxForCausalLM"], "vocab_size": 320}, indent=2)
    (out / "config.json").write_text(theirs)
    cfg = small_config(*FAST, "steps=1", out=out)
    with contextlib.suppress(RunDirError):  # refused: fine
        train(cfg)
    assert (out / "config.json").read_text() == theirs, "another program's config.json was replaced"
