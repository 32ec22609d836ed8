"""The foxacp command: demo, train, plot, export-gates, export-hf, generate, eval, analyze, bench.

    foxacp demo                                   tiny FoX Pro on the stdlib corpus, CPU, a few minutes
    foxacp train --preset 125M --set seq_len=16384 --set micro_batch_size=2 --out runs/125m
    foxacp train --resume --out runs/125m         continue a run from its latest checkpoint
    foxacp plot runs/125m                         runs/125m/plot.png
    foxacp export-gates runs/125m --out gates.safetensors
    foxacp export-hf runs/125m hf/125m            a transformers directory (needs the hf extra)
    foxacp generate runs/125m --prompt "def main(" --max-new-tokens 200 --temperature 0.8
    foxacp eval runs/125m --data held_out/ --out eval/125m --compare-exact
    foxacp analyze runs/125m --data held_out/ --out analysis/125m
    foxacp bench --quick                          the attention benchmark (foxacp.bench.attention)

Multi-GPU: ``torchrun --standalone --nproc-per-node=N -m foxacp.cli train ...``.

An existing run directory is refused unless --resume continues it or --overwrite replaces it; a run locks
its directory. The first SIGINT/SIGTERM stops training after the current step with a checkpoint, and the
command exits with 128 + the signal number (130, 143), the shell's code for a run ended by that signal; a
second signal ends it at once.

Exit status 2 and one line ``foxacp: error: ...`` for the errors a user can fix: bad settings
(ConfigError and every ValueError: the library's contract is a ValueError naming the argument), checkpoints
(CheckpointError), run directories (RunDirError), a diverged run (DivergedError) and files (OSError:
missing, not permitted, disk full). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEMO_OUT = "runs/demo"
DEMO_PROMPT = "def "


def _run_dir_of(path: Path) -> Path:
    """The run directory of a run directory or of one of its checkpoint directories."""
    from foxacp.train.checkpoint import home_run_dir

    path = Path(path)
    if (path / "config.json").exists():
        return path
    return home_run_dir(path) or path


def _home_run_dir(resume: Path) -> Path | None:
    """The run directory whose ``checkpoints/`` holds the checkpoint ``resume`` names; None for a checkpoint kept
    elsewhere (or none found: the loop reports it)."""
    from foxacp.train import CheckpointError
    from foxacp.train.checkpoint import home_run_dir, resolve_checkpoint

    try:
        return home_run_dir(resolve_checkpoint(resume))
    except CheckpointError:
        return None


def _resumed_config(resume: Path):
    """The TrainConfig a resume starts from: the one the checkpoint was written with (an older checkpoint's
    own settings, not those of a later branch in config.json), or, on a plain resume of a run whose last session
    resumed this same checkpoint and died before its next one, that session's settings (a longer run, say); a
    run's config.json when the checkpoint cannot be read (the loop then reports why); None when there is
    neither."""
    from foxacp.train import CheckpointError
    from foxacp.train.checkpoint import read_meta, resolve_checkpoint
    from foxacp.train.config import TrainConfig

    try:
        ckpt = resolve_checkpoint(resume)
        last = _last_start(resume) or {}
        if last.get("resumed_from") and Path(last["resumed_from"]).resolve() == ckpt.resolve():
            return TrainConfig.from_dict(last["train_config"])
        return TrainConfig.from_dict(read_meta(ckpt, verify=False)["train_config"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        saved = _run_dir_of(resume) / "config.json"
        return TrainConfig.load(saved) if saved.exists() else None


def _last_start(run_dir: Path) -> dict | None:
    """The last start record of the log of ``run_dir`` (a run directory: a plain resume); None otherwise."""
    from foxacp.train.metrics import read_log

    if not (Path(run_dir) / "log.jsonl").is_file():
        return None
    return next((r for r in reversed(read_log(run_dir)) if r.get("kind") == "start"), None)


def train_config_from_args(args: argparse.Namespace):
    """(TrainConfig, resume source or None) from the ``train`` arguments.

    A resumed run starts from the settings its checkpoint was written with (``_resumed_config``); --preset may
    only name its preset (the loop refuses another); --data, --tokenizer, --steps, --out and then every --set
    are applied on top (the loop logs what changed).
    """
    from foxacp.train.config import ConfigError, parse_overrides, preset_config

    resume = None
    base = None
    if args.resume is not None:
        if args.resume:
            resume = Path(args.resume)
        elif args.out:
            resume = Path(args.out)
        else:
            raise ConfigError("--resume without a path needs --out RUN_DIR")
        base = _resumed_config(resume)
    if base is None:
        base = preset_config(args.preset or "tiny")
    changes = {}
    if args.preset is not None:
        changes["preset"] = args.preset
    if args.data is not None:
        changes["corpus"] = args.data
    if args.tokenizer is not None:
        changes["tokenizer"] = args.tokenizer
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.out is not None:
        changes["out"] = args.out
    elif resume is not None and (home := _home_run_dir(resume)) is not None:
        changes["out"] = str(home)  # a moved or copied run continues where its checkpoint is
    cfg = parse_overrides(dataclasses.replace(base, **changes), args.set or [])
    return cfg, resume


def cmd_train(args: argparse.Namespace) -> int:
    from foxacp.train.loop import train
    from foxacp.train.plot import plot_run

    cfg, resume = train_config_from_args(args)
    summary = train(cfg, resume=resume, overwrite=args.overwrite)
    if summary["stopped_by"] is not None:
        return 128 + signal.Signals[summary["stopped_by"]].value
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"plot: {plot_run(summary['run_dir'])}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from foxacp.train.config import parse_overrides, preset_config
    from foxacp.train.loop import train
    from foxacp.train.plot import plot_run

    cfg = preset_config("tiny")
    cfg = dataclasses.replace(cfg, out=args.out, device="cpu", steps=args.steps)
    cfg = parse_overrides(cfg, args.set or [])
    start = time.perf_counter()
    # The demo's own folder holds the previous demo: each demo replaces it. Any other folder is protected.
    s = train(cfg, overwrite=args.overwrite or Path(args.out) == Path(DEMO_OUT))
    if s["stopped_by"] is not None:
        return 128 + signal.Signals[s["stopped_by"]].value
    plot = plot_run(s["run_dir"])
    minutes = (time.perf_counter() - start) / 60
    print(
        f"\ndemo done in {minutes:.1f} min: {s['steps']} steps, {s['tokens']:,} tokens, "
        f"{s['n_params'] / 1e6:.2f}M parameters"
    )
    print(f"  final train loss  {s['final_loss']:.4f} nats/token")
    if s["eval_loss"] is not None:
        print(f"  final eval loss   {s['eval_loss']:.4f} nats/token")
    print(f"  throughput        {s['tokens_per_s']:,.0f} tokens/s (training steps only)")
    if s["acp_saving"] is not None:
        print(f"  ACP FLOP saving   {100 * s['acp_saving']:.1f}% of causal attention tiles skipped")
    print(f"  log               {s['log']}")
    print(f"  plot              {plot}")
    print("\nsample (temperature 0.8):\n")
    model, tokenizer = load_for_generation(Path(s["run_dir"]), "cpu")
    stream_generate(model, tokenizer, DEMO_PROMPT, max_new_tokens=300, temperature=0.8, seed=0)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from foxacp.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def cmd_export_gates(args: argparse.Namespace) -> int:
    from foxacp.eval.gates import export_gates

    shape = export_gates(args.run_dir, args.out, batch_size=args.batch_size, seq_len=args.seq_len, device=args.device)
    print(f"wrote {args.out}: log_fgate {shape} (layers, batch, tokens, heads) float32")
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    try:
        from foxacp.hf.export import export_hf
    except ImportError as e:
        print(f"foxacp export-hf: needs transformers (pip install 'foxacp[hf]'): {e}", file=sys.stderr)
        return 2
    out = export_hf(args.run_dir, args.out_dir, eos_token_id=args.eos_token_id, overwrite=args.overwrite)
    print(f"wrote {out} (AutoModelForCausalLM.from_pretrained after `import foxacp.hf`, or foxacp.load)")
    return 0


def load_for_generation(run_dir: Path, device: str):
    """(model, tokenizer) of a run or checkpoint directory, the model in eval mode on ``device`` (see
    ``foxacp.eval.report.load_model_and_tokenizer``)."""
    from foxacp.eval.report import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(run_dir, device)
    return model.eval(), tokenizer


STREAM_CONTEXT = 8  # prompt tokens decoded with the new ones: enough for a decoder's word boundaries


def _new_text(tokenizer, prompt_ids: list[int], new: list[int]) -> str:
    """The text that ``new`` adds after ``prompt_ids``. Decoded with the prompt's last tokens, as decoders such as
    sentencepiece's drop the space that starts a text but not one inside it."""
    context = prompt_ids[-STREAM_CONTEXT:]
    before, after = tokenizer.decode(context), tokenizer.decode(context + new)
    return after[len(before) :] if after.startswith(before) else tokenizer.decode(new)


def stream_generate(model, tokenizer, prompt: str, *, out=None, **sampling) -> str:
    """Generate from ``prompt`` and write the text to ``out`` (stdout) as it comes; returns the new text."""
    from foxacp.infer import generate

    out = out or sys.stdout
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    new: list[int] = []
    shown = 0

    def show(tokens) -> None:
        nonlocal shown
        if not new:  # the arguments passed generate's checks: the prompt goes out with the first token
            out.write(prompt)
        if new and new[-1] == tokenizer.eos_id:
            return
        new.append(int(tokens[0]))
        text = _new_text(tokenizer, ids, new)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            out.write(text[shown:])
            out.flush()
            shown = len(text)

    generate(model, [ids], eos_token_id=tokenizer.eos_id, callback=show, **sampling)
    text = _new_text(tokenizer, ids, new)
    out.write(text[shown:] + "\n")
    out.flush()
    return text


def _device(args: argparse.Namespace) -> str:
    """--device, or CUDA when there is one."""
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_generate(args: argparse.Namespace) -> int:

    device = _device(args)
    model, tokenizer = load_for_generation(args.run_dir, device)
    report: dict = {}
    stream_generate(
        model,
        tokenizer,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        compile=args.compile,
        evict=args.evict,
        pool_fraction=args.pool_fraction,
        memory_report=report if args.evict else None,
    )
    if args.evict:
        sys.stderr.write(report["summary"] + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:

    from foxacp.eval.report import run_eval

    device = _device(args)
    rec = run_eval(
        args.path,
        args.data,
        args.out,
        device=device,
        dtype=args.dtype,
        max_len=args.max_len,
        compare_exact=args.compare_exact,
        compare_evict=args.compare_evict,
        passkey_lengths=args.passkey_lengths,
        depths=args.depths,
        trials=args.trials,
        digits=args.digits,
        seed=args.seed,
        filler=args.filler,
    )
    pos = rec["per_position"]
    print(f"wrote {Path(args.out) / 'eval.json'}: loss {pos['loss']:.4f} over {pos['tokens']:,} tokens")
    print(f"  passkey accuracy {rec['passkey']['overall']:.2f}")
    if "comparison" in rec:
        c = rec["comparison"]
        print(f"  ACP vs exact: max |loss difference| {c['max_abs_loss_difference']:.2e}")
        print(f"  same passkey answers in {100 * c['passkey_same_answer']:.0f}% of the prompts")
    if "evict_comparison" in rec:
        same = rec["evict_comparison"]["passkey_same_answer"]
        held = rec["evict"]["passkey"]["memory"]["fraction_held_mean"]
        print(f"  evicting cache: same passkey answers in {100 * same:.0f}% of the prompts, holding {100 * held:.1f}%")
        print("    of a full cache at the end (mean over prompts)")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:

    from foxacp.eval.analyze import run_analyze

    device = _device(args)
    rec = run_analyze(
        args.path,
        args.data,
        args.out,
        device=device,
        dtype=args.dtype,
        max_len=args.max_len,
        log_eps=args.log_eps,
        tile=args.tile,
        heads_per_layer=args.heads_per_layer,
    )
    print(f"wrote {Path(args.out) / 'analyze.json'}: {rec['tokens']} tokens, log eps {rec['log_eps']}")
    print(f"  ACP skips {100 * rec['total_saving']:.1f}% of causal tiles ({rec['tile'][0]}x{rec['tile'][1]})")
    if (t := rec["search_time"]) is not None:
        share = f"{100 * t['total_share_forward']:.1f}% of the forward, {100 * t['total_share_fwd_bwd']:.1f}%"
        print(f"  the boundary search takes {share} of forward + backward")
    return 0


def cmd_bench(bench_args: list[str]) -> int:
    try:
        from foxacp.bench.attention import main as bench_main
    except ImportError as e:
        print(f"foxacp bench: the attention benchmark is not available ({e})", file=sys.stderr)
        return 2
    return int(bench_main(bench_args) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="foxacp", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def overrides(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--set",
            action="extend",
            nargs="+",
            metavar="KEY=VALUE",
            help="override a TrainConfig field (lr=1e-3) or a ModelConfig field (model.acp=false)",
        )

    demo = sub.add_parser("demo", help="train the tiny preset on the stdlib corpus on CPU")
    demo.add_argument("--out", default=DEMO_OUT, help="run directory")
    demo.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the preset's)")
    demo.add_argument(
        "--overwrite", action="store_true", help=f"replace a run in --out (the default {DEMO_OUT} is always replaced)"
    )
    overrides(demo)
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser("train", help="train a model (torchrun for several GPUs)")
    tr.add_argument("--preset", default=None, help="tiny, 125M, 360M or 760M (default tiny)")
    tr.add_argument("--data", default=None, help="corpus spec: stdlib, PATH[#FIELD], hf:NAME[@CFG][:SPLIT]")
    tr.add_argument("--tokenizer", default=None, help="byte, bpe:N or hf:NAME_OR_PATH")
    tr.add_argument("--out", default=None, help="run directory (default runs/<preset>)")
    tr.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the token budget)")
    tr.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="continue from PATH (a run or checkpoint directory), or from --out's latest checkpoint",
    )
    tr.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its log, checkpoints)")
    overrides(tr)
    tr.set_defaults(func=cmd_train)

    pl = sub.add_parser("plot", help="plot a run's loss, ACP saving and per-position loss")
    pl.add_argument("run_dir", type=Path)
    pl.add_argument("--out", type=Path, default=None, help="PNG path (default RUN_DIR/plot.png)")
    pl.set_defaults(func=cmd_plot)

    ex = sub.add_parser("export-gates", help="save a trained model's log forget gates on held-out text")
    ex.add_argument("run_dir", type=Path, help="run directory or checkpoint directory")
    ex.add_argument("--out", type=Path, required=True, help="output .safetensors")
    ex.add_argument("--batch-size", type=int, default=1)
    ex.add_argument("--seq-len", type=int, default=None, help="default: the run's context length")
    ex.add_argument("--device", default="cpu")
    ex.set_defaults(func=cmd_export_gates)

    hf = sub.add_parser("export-hf", help="save a trained model as a Hugging Face transformers directory")
    hf.add_argument("run_dir", type=Path, help="run directory or checkpoint directory")
    hf.add_argument("out_dir", type=Path, help="output directory (must be empty or new)")
    hf.add_argument("--eos-token-id", type=int, default=None, help="stored in the config; generate stops on it")
    hf.add_argument("--overwrite", action="store_true", help="write into a non-empty out_dir")
    hf.set_defaults(func=cmd_export_hf)

    ge = sub.add_parser("generate", help="continue a prompt with a trained model, streaming the text")
    ge.add_argument("run_dir", type=Path, help="run directory or checkpoint directory")
    ge.add_argument("--prompt", required=True, help="text to continue")
    ge.add_argument("--max-new-tokens", type=int, default=200)
    ge.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    ge.add_argument("--top-k", type=int, default=None)
    ge.add_argument("--top-p", type=float, default=None)
    ge.add_argument("--seed", type=int, default=None)
    ge.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ge.add_argument("--compile", action="store_true", help="torch.compile the decode step's blocks (fastest on CUDA)")
    ge.add_argument("--evict", action="store_true", help="free the KV blocks ACP skips for good (FoX Pro only)")
    ge.add_argument("--pool-fraction", type=float, default=None, help="evicting cache's pool, share of a full cache")
    ge.set_defaults(func=cmd_generate)

    from foxacp.eval.report import DEPTHS

    ev = sub.add_parser("eval", help="loss by position and passkey retrieval of a trained model (PNG + eval.json)")
    ev.add_argument("path", type=Path, help="run directory or checkpoint directory")
    ev.add_argument("--data", type=Path, required=True, help="held-out text: a file (one document) or a folder")
    ev.add_argument("--out", type=Path, required=True, help="output folder (eval.json and PNGs)")
    ev.add_argument("--max-len", type=int, default=None, help="positions scored per document (default 4x context)")
    ev.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ev.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ev.add_argument("--compare-exact", action="store_true", help="also run exactly (ACP off), side by side")
    ev.add_argument("--compare-evict", action="store_true", help="also answer the passkeys with the evicting cache")
    ev.add_argument("--passkey-lengths", type=int, nargs="+", default=None, help="prompt lengths in tokens")
    ev.add_argument("--depths", type=float, nargs="+", default=list(DEPTHS), help="key depths in [0, 1]")
    ev.add_argument("--trials", type=int, default=4, help="passkey prompts per (length, depth)")
    ev.add_argument("--digits", type=int, default=5, help="digits of the passkey")
    ev.add_argument("--seed", type=int, default=0, help="seed of the passkeys")
    ev.add_argument("--filler", type=Path, default=None, help="haystack text file (default: built-in filler)")
    ev.set_defaults(func=cmd_eval)

    an = sub.add_parser("analyze", help="where ACP prunes: decay maps, saving per head, against eps and tile size")
    an.add_argument("path", type=Path, help="run directory or checkpoint directory")
    an.add_argument("--data", type=Path, required=True, help="text file or folder; its longest document is used")
    an.add_argument("--out", type=Path, required=True, help="output folder (analyze.json and PNGs)")
    an.add_argument("--max-len", type=int, default=None, help="tokens of the document (default: the context)")
    an.add_argument("--log-eps", type=float, default=None, help="default: the model's")
    an.add_argument("--tile", type=int, default=None, help="square ACP tile (default: the device's grid)")
    an.add_argument(
        "--heads-per-layer", type=int, default=3, help="decay maps per layer, of heads at evenly spaced ranks of saving"
    )
    an.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    an.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    an.set_defaults(func=cmd_analyze)

    # Listed for --help; main() hands everything after "bench" to the benchmark's own parser.
    sub.add_parser("bench", help="attention benchmark; arguments go to foxacp.bench.attention", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``foxacp`` and ``python -m foxacp.cli``; returns the exit status (see the module
    docstring for which errors become one line and status 2)."""
    from foxacp.train import CheckpointError, ConfigError, DivergedError, RunDirError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, RunDirError, DivergedError, ValueError, OSError) as e:
        print(f"foxacp: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # a size the machine cannot hold is the user's to change
        if not isinstance(e, MemoryError) and "out of memory" not in str(e) and "can't allocate memory" not in str(e):
            raise
        print(f"foxacp: error: out of memory ({str(e).splitlines()[0][:200]}); ask for less", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which stops cleanly on its own)
        print("foxacp: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
