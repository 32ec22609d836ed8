"""Smoke test of experiments/047-train-speed/check_ce.py on the CPU (tiny sizes, float32); its bf16 check and
timings need a GPU: OUT=DIR bash experiments/047-train-speed/run.sh."""

from tests.experiments import EXPERIMENTS, load_script

SCRIPT = EXPERIMENTS / "047-train-speed" / "check_ce.py"


def test_check_ce_compares_both_paths_with_float64(tmp_path):
    module = load_script(SCRIPT)
    recs = module.main(["--rows", "150", "--d", "16", "--vocab", "70", "--device", "cpu", "--out", str(tmp_path)])
    (r,) = recs
    assert r["pass"] and r["vocab"] == 70 and (tmp_path / "ce_check.json").exists()
    assert 0 < r["err_dweight_chunked"] < 1e-5 and 0 < r["err_loss_full"] < 1e-5
