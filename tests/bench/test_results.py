"""Result set folder names: one helper for every benchmark, read back by the index."""

from pathlib import Path

import pytest

from foxacp.bench.results import SET_NAME, device_tag, result_dir, short_commit


def test_device_tag():
    assert device_tag("NVIDIA H100 80GB HBM3") == "h100"
    assert device_tag("NVIDIA H200", world_size=2) == "h200x2"
    assert device_tag("NVIDIA A100-SXM4-80GB") == "a100"
    assert device_tag("cpu") == "cpu"


def test_short_commit():
    assert short_commit("c4b333e0123456789abcdef0123456789abcdef0-dirty") == "c4b333e-dirty"
    assert short_commit("c4b333e (given; git here says unknown)") == "c4b333e"
    assert short_commit("unknown") == short_commit("") == short_commit("not a sha") == "unknown"


def test_result_dir_round_trips_through_the_index_pattern():
    path = result_dir("attention-quick", date="2026-11-22T16:40:35Z", commit="c4b333e99", device="h100")
    assert path == Path("results/2026-11-22-c4b333e-attention-quick-h100")
    m = SET_NAME.fullmatch(path.name)
    assert (m["date"], m["commit"], m["what"], m["device"]) == ("2026-11-22", "c4b333e", "attention-quick", "h100")
    with pytest.raises(ValueError, match="what"):
        result_dir("Attention x", date="2026-11-22", commit="unknown", device="h100")
    with pytest.raises(ValueError, match="device"):
        result_dir("attention", date="2026-11-22", commit="unknown", device="h-100")
    with pytest.raises(ValueError, match="date"):
        result_dir("attention", date="22.11.2026", commit="unknown", device="h100")
