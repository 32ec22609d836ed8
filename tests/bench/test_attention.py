"""The benchmark driver: argument parsing, the FlexAttention block mask and score_mod, the reference check,
and a whole run on the CPU with a fake timer. The GPU test runs a tiny benchmark for real."""

import json

import pytest
import torch

from foxacp.bench.attention import CheckFailed, check_foxacp, main, make_inputs, parse_args
from foxacp.bench.gates import synthetic_log_fgate
from foxacp.bench.peers import _flex_fox, fox_block_mask
from foxacp.testing import rel_err

CPU = torch.device("cpu")


def test_parse_args():
    args = parse_args(["--quick"])
    assert args.configs == [(24, 64)] and args.contexts == [4096, 16384]
    assert args.modes == ["fwd", "fwdbwd"] and args.rep <= 40
    args = parse_args(["--head-dim", "64", "--contexts", "4k,8192", "--rows", "fla-fox,sdpa-cudnn"])
    assert args.configs == [(12, 64), (16, 64), (24, 64)] and args.contexts == [4096, 8192]
    assert args.rows == ["sdpa-cudnn", "fla-fox"]  # report order
    assert parse_args(["--heads", "12", "--head-dim", "128", "--modes", "fwd"]).configs == [(12, 128)]
    with pytest.raises(SystemExit):
        parse_args(["--rows", "nope"])
    with pytest.raises(SystemExit):
        parse_args(["--heads", "7"])
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--tag", "Part A"])


def test_block_mask_from_acp_boundaries():
    kv_lo = torch.tensor([[[0, 0, 1, 3]], [[0, 1, 2, 3]]], dtype=torch.int32)  # (B=2, H=1, 4 blocks)
    dense = fox_block_mask(kv_lo, 512).to_dense()
    rows, cols = torch.arange(4)[:, None], torch.arange(4)[None, :]
    expect = (cols <= rows) & (cols >= kv_lo[..., None])
    assert torch.equal(dense.bool(), expect)
    with pytest.raises(ValueError):
        fox_block_mask(kv_lo, 500)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_score_mod_matches_reference():
    """FoX through FlexAttention (eager, forward: CPU has no Flex backward) equals the dense reference."""
    import foxacp

    B, T, H, D = 1, 256, 2, 32
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, generator=gen) for _ in range(3))
    g = synthetic_log_fgate(B, T, H, seed=3)
    ref = foxacp.forgetting_attention(q.double(), k.double(), v.double(), g, log_eps=None, backend="reference")
    causal = fox_block_mask(torch.zeros(B, H, T // 128, dtype=torch.int32), T)
    out = _flex_fox(*(x.transpose(1, 2) for x in (q, k, v)), g, causal).transpose(1, 2)
    assert rel_err(out, ref) < 1e-5


def test_check_catches_a_wrong_kernel():
    g = synthetic_log_fgate(2, 256, 3)
    inp = make_inputs(2, 256, 3, 64, g, qk_bound=8.0, log_eps=-10.0, device=CPU)
    for log_eps in (None, -10.0):
        err = check_foxacp(inp, log_eps, backend="torch", grads=True, window=128, tol=2e-2)
        assert 0 < err < 2e-2
    assert check_foxacp(inp, None, backend="torch", grads=False, window=128, tol=2e-2) < 2e-2
    with pytest.raises(CheckFailed, match="float64 reference"):
        check_foxacp(inp, None, backend="torch", grads=True, window=128, tol=1e-9)


def _fake_timer(fn, grad_to_none=None):
    fn()
    for x in grad_to_none or ():
        x.grad = None
    return 1.0


CPU_RUN = ["--device", "cpu", "--backend", "torch", "--no-compile", "--tokens", "256", "--heads", "12"]
CPU_RUN += ["--head-dim", "64", "--contexts", "128,256", "--max-bwd-context", "128"]


def test_cpu_run_writes_results(tmp_path):
    out = tmp_path / "out"
    rows = "sdpa-cudnn,sdpa-flash,foxacp-exact,foxacp-acp,flex-fox-acp,fla-fox"  # eager flex-fox is slow on CPU
    args = [*CPU_RUN, "--rows", rows, "--results-dir", str(tmp_path / "res"), "--out", str(out)]
    status = main(args, timer=_fake_timer)
    assert status == 0
    files = sorted(p.suffix for p in out.iterdir())
    assert files == [".json", ".md", ".png"]
    data = json.loads(next(out.glob("*.json")).read_text())
    rows = {(r["row"], r["seqlen"], r["mode"]): r for r in data["rows"]}
    assert len(rows) == 6 * 3  # 6 rows x (128 fwd, 128 fwdbwd, 256 fwd)
    acp = rows["foxacp-acp", 256, "fwd"]
    assert acp["status"] == "ok" and acp["ms"] == 1.0 and 0 < acp["flop_saving"] < 1
    assert acp["search_ms"] == 1.0 and acp["ref_rel_err"] < 2e-2 and acp["vs_exact_rel_err"] < 2e-2
    assert rows["foxacp-exact", 128, "fwdbwd"]["status"] == "ok"
    assert rows["sdpa-cudnn", 128, "fwd"]["status"] == "skipped"  # no cuDNN on the CPU: a note, no crash
    assert rows["flex-fox-acp", 256, "fwd"]["vs_exact_rel_err"] < 2e-2
    assert rows["fla-fox", 256, "fwd"]["status"] in ("ok", "skipped")


def test_rounds_interleave_rows_and_keep_the_median(tmp_path):
    calls = []

    def timer(fn, grad_to_none=None):
        calls.append(fn)
        return float(len(calls))  # 1, 2, 3, ...: each row's rounds differ

    args = [*CPU_RUN, "--contexts", "128", "--modes", "fwd", "--rows", "foxacp-exact,sdpa-flash", "--rounds", "3"]
    assert main([*args, "--results-dir", str(tmp_path)], timer=timer) == 0
    rows = {r["row"]: r for r in json.loads(next(tmp_path.glob("*/attention.json")).read_text())["rows"]}
    # round-major, rows in report order: flash 1, exact 2, flash 3, exact 4, flash 5, exact 6
    assert rows["sdpa-flash"]["ms_rounds"] == [1.0, 3.0, 5.0] and rows["sdpa-flash"]["ms"] == 3.0
    assert rows["foxacp-exact"]["ms_rounds"] == [2.0, 4.0, 6.0] and rows["foxacp-exact"]["ms"] == 4.0


def test_cpu_run_with_recorded_gates(tmp_path):
    gates = -torch.rand(2, 1, 100, 5) * 0.5  # (layers, B, T, H): tiled up to the shape
    torch.save(gates, tmp_path / "gates.pt")
    args = [*CPU_RUN, "--contexts", "128", "--rows", "foxacp-acp", "--gates", str(tmp_path / "gates.pt")]
    assert main([*args, "--layer", "1", "--results-dir", str(tmp_path)], timer=_fake_timer) == 0
    data = json.loads(next(tmp_path.glob("*/attention.json")).read_text())
    assert "gates.pt layer 1" in data["meta"]["settings"]["gates"]
    assert all(r["status"] == "ok" for r in data["rows"])


def test_cpu_run_stops_on_failed_check(tmp_path, capsys):
    status = main([*CPU_RUN, "--tol", "1e-9", "--results-dir", str(tmp_path)], timer=_fake_timer)
    assert status == 1
    assert "REFERENCE CHECK FAILED" in capsys.readouterr().out
    assert list(tmp_path.glob("*/attention.md"))


@pytest.mark.gpu
def test_gpu_tiny_benchmark(tmp_path):
    rows = "foxacp-exact,foxacp-acp,sdpa-cudnn,sdpa-flash,flex-fox,flex-fox-acp,fla-fox"
    args = ["--heads", "12", "--head-dim", "64", "--contexts", "1k", "--tokens", "4096", "--rows", rows]
    status = main([*args, "--warmup", "2", "--rep", "5", "--results-dir", str(tmp_path)])
    assert status == 0
    data = json.loads(next(tmp_path.glob("*/attention.json")).read_text())
    for r in data["rows"]:
        if r["row"].startswith("foxacp"):
            assert r["status"] == "ok" and r["ms"] > 0 and r["ref_rel_err"] < 2e-2, r
