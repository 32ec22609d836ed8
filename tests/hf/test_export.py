"""foxacp export-hf and foxacp.load of a transformers directory; trust_remote_code through the auto_map."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import foxacp
from foxacp.cli import main
from foxacp.train import CheckpointError
from foxacp.train.loop import train
from tests.train.conftest import cache_dir, corpus_dir  # noqa: F401  (fixtures)

transformers = pytest.importorskip("transformers")
from foxacp.hf import FoxForCausalLM  # noqa: E402
from foxacp.hf.export import export_hf  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus_dir, cache_dir):  # noqa: F811
    from foxacp.train.config import parse_overrides, preset_config
    from tests.train.conftest import SMALL

    out = tmp_path_factory.mktemp("hf") / "run"
    base = [f"corpus={corpus_dir}", f"cache_dir={cache_dir}", f"out={out}", "steps=1"]
    train(parse_overrides(preset_config("tiny"), [*SMALL, *base]))
    return out


def test_export_hf_cli_gives_a_directory_that_transformers_and_foxacp_load(run_dir, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export-hf", str(run_dir), str(out), "--eos-token-id", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    trained = foxacp.load(run_dir)
    ids = torch.randint(0, trained.config.vocab_size, (2, 11))
    via_hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert via_hf.config.eos_token_id == 3 and via_hf.config.to_model_config() == trained.config
    via_load = foxacp.load(out)
    with torch.no_grad():
        expected = trained(ids)
        assert torch.equal(via_hf(ids).logits, expected)
        assert torch.equal(via_load(ids), expected)
    assert foxacp.load(out, dtype=torch.float64).embed.weight.dtype == torch.float64
    # An existing non-empty directory is refused (status 2, one line) unless --overwrite.
    assert main(["export-hf", str(run_dir), str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["export-hf", str(run_dir), str(out), "--overwrite"]) == 0
    with pytest.raises(ValueError, match="eos_token_id"):
        export_hf(run_dir, tmp_path / "other", eos_token_id=10**6)


def test_trust_remote_code_loads_through_the_auto_map_without_importing_foxacp_hf(run_dir, tmp_path):
    out = export_hf(run_dir, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    module, _ = config["auto_map"]["AutoModelForCausalLM"].split(".")
    assert (out / f"{module}.py").exists()
    script = (
        "import sys, torch, transformers\n"
        f"m = transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "assert 'foxacp.hf' in sys.modules and type(m).__name__ == 'FoxForCausalLM'\n"
        "print(float(m(torch.arange(5)[None]).logits.double().sum()))\n"
    )
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        expected = float(foxacp.load(run_dir)(torch.arange(5)[None]).double().sum())
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-6)


def test_load_of_a_damaged_transformers_directory_names_what_is_wrong(tiny_config, tmp_path):
    from foxacp.model import FoxLM

    FoxForCausalLM.from_foxlm(FoxLM(tiny_config())).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    good = dict(weights)

    weights["model.extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unknown weights \['model.extra.weight'\]"):
        foxacp.load(tmp_path)

    weights = dict(good)
    del weights["model.norm.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing weights \['norm.weight'\]"):
        foxacp.load(tmp_path)

    weights = dict(good)
    weights["model.embed.weight"] = torch.zeros(65, 64)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="wrong shape"):
        foxacp.load(tmp_path)

    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        foxacp.load(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_heads": 3}))
    with pytest.raises(CheckpointError, match="not a valid foxacp model config"):
        foxacp.load(tmp_path)


def _tiny_foxlm(seed: int):
    from foxacp.model import FoxLM, ModelConfig

    torch.manual_seed(seed)
    return FoxLM(ModelConfig(vocab_size=320, n_layers=1, d_model=64, n_heads=2, attn_backend="torch"))


def test_export_refuses_a_bool_eos_token_id(tmp_path):
    FoxForCausalLM.from_foxlm(_tiny_foxlm(0)).save_pretrained(tmp_path / "src")
    with pytest.raises(ValueError, match="eos_token_id"):
        export_hf(tmp_path / "src", tmp_path / "out", eos_token_id=True)


def test_export_over_a_sharded_save_loads_the_new_weights(tmp_path):
    """overwrite replaces an earlier sharded save: its index must not outrank the new model.safetensors."""
    FoxForCausalLM.from_foxlm(_tiny_foxlm(0)).save_pretrained(tmp_path / "out", max_shard_size="50KB")
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    new = _tiny_foxlm(1)
    FoxForCausalLM.from_foxlm(new).save_pretrained(tmp_path / "src")
    export_hf(tmp_path / "src", tmp_path / "out", overwrite=True)
    assert not list((tmp_path / "out").glob("model-*"))
    assert torch.equal(foxacp.load(tmp_path / "out").embed.weight, new.embed.weight)
    # A folder that holds both (saved over by hand): model.safetensors wins, as in transformers.
    FoxForCausalLM.from_foxlm(_tiny_foxlm(2)).save_pretrained(tmp_path / "both", max_shard_size="50KB")
    FoxForCausalLM.from_foxlm(new).save_pretrained(tmp_path / "both")
    assert torch.equal(foxacp.load(tmp_path / "both").embed.weight, new.embed.weight)


@pytest.mark.parametrize(
    "out", ["run", "run/checkpoints/hf", "checkpoint", "checkpoint/hf", "copied/checkpoints/hf", "outer"]
)
def test_export_never_writes_over_a_run_a_checkpoint_or_its_source(tmp_path, out):
    """Even with overwrite=True: a run (its log), anything in its checkpoints/ folder, a checkpoint (its meta.json)
    or a folder holding the source is refused, with nothing written."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text('{"kind": "train", "step": 1}\n')
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "meta.json").write_text("{}\n")
    (tmp_path / "copied" / "checkpoints").mkdir(parents=True)  # a run's checkpoints, copied without its log
    source = tmp_path / "outer" / "src" if out == "outer" else tmp_path / "src"
    FoxForCausalLM.from_foxlm(_tiny_foxlm(0)).save_pretrained(source)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="never overwritten"):
        export_hf(source, tmp_path / out, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
