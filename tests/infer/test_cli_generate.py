"""``foxacp generate RUN_DIR --prompt TEXT``: streams the model's continuation of the prompt."""

import foxacp
from foxacp.cli import load_for_generation, main
from tests.train.conftest import SMALL, cache_dir, corpus_dir  # noqa: F401  (fixtures)


def test_generate_streams_the_greedy_continuation(corpus_dir, cache_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    args = ["--data", str(corpus_dir), "--set", *SMALL, f"cache_dir={cache_dir}", "steps=2"]
    assert main(["train", "--out", str(out), *args]) == 0
    capsys.readouterr()
    cmd = ["generate", str(out), "--prompt", "import os\n", "--max-new-tokens", "12", "--temperature", "0"]
    assert main([*cmd, "--device", "cpu"]) == 0
    text = capsys.readouterr().out

    model, tokenizer = load_for_generation(out, "cpu")
    prompt = tokenizer.encode("import os\n")
    (ids,) = foxacp.generate(model, [prompt], 12, eos_token_id=tokenizer.eos_id)
    assert text == "import os\n" + tokenizer.decode(ids[len(prompt) :].tolist()) + "\n"

    assert main([*cmd, "--device", "cpu", "--evict", "--pool-fraction", "1.0"]) == 0  # same tokens, and the report
    captured = capsys.readouterr()
    assert captured.out == text and "guarantee: eps" in captured.err

    assert main([*cmd, "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "missing"), "--prompt", "x"]) == 2
