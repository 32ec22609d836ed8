"""The command line as a new user meets it on a CPU: checkpoint directories and moved runs, a BPE run without its
training corpus, refused arguments that print nothing, sizes the machine cannot hold, binary data, the help.
Each docstring says what used to go wrong."""

from __future__ import annotations

import shutil

import pytest

from foxacp.cli import build_parser, main
from tests.train.conftest import SMALL, cache_dir, corpus_dir, one_thread  # noqa: F401  (fixtures)


def _train(out, corpus, cache, *extra):
    args = ["train", "--out", str(out), "--data", str(corpus), "--set", *SMALL, f"cache_dir={cache}", "steps=1", *extra]
    assert main(args) == 0


@pytest.fixture(scope="module")
def run(corpus_dir, cache_dir, tmp_path_factory):  # noqa: F811
    """One trained tiny run (byte tokenizer, 1 step)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    _train(out, corpus_dir, cache_dir)
    return out


@pytest.fixture
def held_out(corpus_dir, tmp_path):  # noqa: F811
    folder = tmp_path / "held"
    folder.mkdir()
    for p in sorted(corpus_dir.glob("*.py"))[:2]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture
def binary_file(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 80)  # NUL and control bytes: what the corpus reader calls binary
    return path


# ---- generate ---------------------------------------------------------------------------------------------


def test_generate_accepts_a_checkpoint_directory(run, capsys):
    """`foxacp generate RUN/checkpoints/step_N`: its help says "run directory or checkpoint directory", and
    export-gates, eval and analyze take one, but generate fails with
    `foxacp: error: [Errno 2] No such file or directory: '.../step_000001/config.json'`
    (load_for_generation reads config.json next to the given path)."""
    ckpt = run / "checkpoints" / "step_000001"
    assert ckpt.is_dir()
    rc = main(["generate", str(ckpt), "--prompt", "def ", "--max-new-tokens", "3", "--seed", "0"])
    err = capsys.readouterr().err
    assert rc == 0, err


def test_generate_of_a_bpe_run_does_not_need_the_training_corpus(corpus_dir, cache_dir, tmp_path, capsys):  # noqa: F811
    """A run with a trained BPE tokenizer cannot generate once its training corpus has moved: generate (and
    eval) rebuild the tokenizer from the corpus (`foxacp: error: corpus path '...' does not exist`), though the
    trained tokenizer is in the cache. (When the corpus was edited instead, generate silently trains a new
    tokenizer on the edited corpus and decodes the old model's ids with it.)"""
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    out = tmp_path / "bpe"
    _train(out, corpus, tmp_path / "cache", "--tokenizer", "bpe:300")
    shutil.rmtree(corpus)
    capsys.readouterr()
    rc = main(["generate", str(out), "--prompt", "def ", "--max-new-tokens", "3", "--seed", "0"])
    err = capsys.readouterr().err
    assert rc == 0, err


def test_generate_writes_nothing_to_stdout_when_its_arguments_are_refused(run, capsys):
    """`foxacp generate RUN --prompt 'def f(' --max-new-tokens 0` (or --temperature -1, --top-p 0, --top-k 0,
    --pool-fraction without --evict) exits 2 with the one-line error, but first echoes the prompt to stdout:
    a script that pipes the output gets the prompt as if generation had run."""
    for bad in (["--max-new-tokens", "0"], ["--temperature", "-1"], ["--top-p", "0"], ["--top-p", "1.5"]):
        rc = main(["generate", str(run), "--prompt", "def f(", *bad])
        cap = capsys.readouterr()
        assert rc == 2 and cap.err.startswith("foxacp: error: ")
        assert cap.out == "", (bad, cap.out)


def test_generate_with_an_impossible_max_new_tokens_is_a_user_error(run, capsys):
    """`foxacp generate RUN --prompt def --max-new-tokens 100000000000`: the cache for prompt + new tokens
    cannot be allocated, and the command ends with a RuntimeError traceback (exit 1) instead of the one-line
    error the README promises for a setting the user can fix."""
    rc = main(["generate", str(run), "--prompt", "def", "--max-new-tokens", str(10**12)])
    assert rc == 2
    assert capsys.readouterr().err.startswith("foxacp: error: ")


# ---- train --------------------------------------------------------------------------------------------------


def test_train_resume_without_out_is_a_one_line_error_with_status_2(capsys):
    """`foxacp train --resume` (no PATH, no --out): raises SystemExit with a message, so the process exits with
    status 1 and `foxacp train: --resume ...`, not status 2 and `foxacp: error: ...` as the README promises
    for user mistakes (cli.py train_config_from_args)."""
    try:
        rc = main(["train", "--resume"])
    except SystemExit as e:  # what happens now: exit status 1 (a str code) from inside main
        rc = 1 if isinstance(e.code, str) else e.code
    assert rc == 2
    assert capsys.readouterr().err.startswith("foxacp: error: ")


def test_train_resume_of_a_moved_run_continues_in_that_run(corpus_dir, cache_dir, tmp_path, capsys):  # noqa: F811
    """`mv runs/a runs/b; foxacp train --resume runs/b --set steps=2`: the run continues into runs/a (the `out`
    saved in the checkpoint's config), re-creating the old folder, and runs/b never gets step 2."""
    first, moved = tmp_path / "a", tmp_path / "b"
    _train(first, corpus_dir, cache_dir)
    first.rename(moved)
    assert main(["train", "--resume", str(moved), "--set", "steps=2"]) == 0
    assert not first.exists(), "training re-created the run's old folder and wrote into it"
    assert (moved / "checkpoints" / "latest").read_text().strip() == "step_000002"


# ---- export-gates -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", ["0", "-5"])
def test_export_gates_refuses_a_non_positive_seq_len_clearly(run, tmp_path, capsys, seq_len):
    """`foxacp export-gates RUN --out g.safetensors --seq-len 0` writes gates of the run's context length as if
    --seq-len had not been given (`seq_len or cfg.seq_len`); `--seq-len -5` fails with the meaningless
    `foxacp: error: not enough values to unpack (expected 1, got 0)`."""
    out = tmp_path / "g.safetensors"
    rc = main(["export-gates", str(run), "--out", str(out), "--seq-len", seq_len])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "seq_len" in err or "seq-len" in err, err


def test_an_interrupted_export_gates_leaves_no_file(run, tmp_path, monkeypatch):
    """A study's resumed call skips its export when the file exists: a cut write must leave none."""
    import foxacp.io

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(foxacp.io.os, "replace", killed)  # the data is written; the process dies before the move
    out = tmp_path / "g.safetensors"
    assert main(["export-gates", str(run), "--out", str(out), "--seq-len", "64"]) != 0
    assert list(tmp_path.iterdir()) == []


# ---- eval / analyze -----------------------------------------------------------------------------------------


def test_eval_into_an_earlier_evals_folder_keeps_none_of_its_files(run, held_out, tmp_path):
    """The ACP-vs-exact plots of an earlier --compare-exact evaluation must not stay beside a plain one."""
    import json

    out = tmp_path / "eval"
    args = ["eval", str(run), "--data", str(held_out), "--out", str(out), "--device", "cpu", "--max-len", "256",
            "--passkey-lengths", "200", "--depths", "0.5", "--trials", "1"]  # fmt: skip
    assert main([*args, "--compare-exact"]) == 0
    assert (out / "passkey_exact.png").exists() and (out / "loss_difference.png").exists()
    assert main(args) == 0
    assert "exact" not in json.loads((out / "eval.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == [
        "eval.json",
        "loss_by_position.png",
        "passkey.png",
        "prefix_loss.png",
    ]


def test_eval_refuses_binary_data(run, binary_file, tmp_path, capsys):
    """`foxacp eval RUN --data blob.bin ...` scores a binary file as text (exit 0, a loss over its bytes);
    `foxacp train --data blob.bin` skips it as binary and refuses the corpus. Held-out data that is not text
    should be a one-line error too (eval/long_loss.py read_documents has no binary check)."""
    rc = main(
        ["eval", str(run), "--data", str(binary_file), "--out", str(tmp_path / "ev"), "--max-len", "64",
         "--passkey-lengths", "256", "--trials", "1", "--depths", "0.5"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "binary" in err, err


def test_analyze_refuses_binary_data(run, binary_file, tmp_path, capsys):
    """`foxacp analyze RUN --data blob.bin --out DIR`: analyses the decay on a binary file (exit 0)."""
    rc = main(["analyze", str(run), "--data", str(binary_file), "--out", str(tmp_path / "an"), "--max-len", "128"])
    err = capsys.readouterr().err
    assert rc == 2 and "binary" in err, err


# ---- help ---------------------------------------------------------------------------------------------------


def test_top_level_help_names_every_command():
    """`foxacp --help`'s description reads "The ``foxacp`` command: demo, train, plot, export-gates, generate,
    eval, analyze, bench." (reStructuredText quotes, and export-hf missing)."""
    text = build_parser().format_help()
    description = text.split("positional arguments")[0]
    assert "``" not in description
    assert "export-hf" in description
