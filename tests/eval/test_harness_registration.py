"""Importing foxacp.eval.harness registers "foxacp" with lm_eval (a lazy placeholder: the class is built when lm_eval
asks for it) without hiding lm_eval's own models; ``import foxacp`` imports no lm_eval; without lm_eval the module
imports all the same. Each check runs in a fresh interpreter, since lm_eval's registry is global to a process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run_python(code: str) -> None:
    """Run code in a fresh interpreter; fail with its stderr if it fails."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_importing_the_harness_registers_foxacp_and_keeps_lm_evals_models():
    pytest.importorskip("lm_eval")
    run_python(
        """
        import sys

        import foxacp
        import foxacp.eval
        assert "lm_eval" not in sys.modules, "import foxacp imported lm_eval"

        import foxacp.eval.harness as harness
        assert "lm_eval.api.model" not in sys.modules, "the model class was built at import"

        from lm_eval.api.registry import get_model
        cls = get_model("foxacp")
        assert cls is harness._lm_class() and cls.__name__ == "FoxacpLM"
        assert get_model("dummy").__name__ == "DummyLM"  # lm_eval's own models are still found
        assert harness.register_with_lm_eval() and get_model("foxacp") is cls  # registering again changes nothing
        """
    )


def test_the_class_built_before_lm_eval_asks_replaces_the_placeholder():
    pytest.importorskip("lm_eval")
    run_python(
        """
        from foxacp.eval.harness import FoxacpLM, _lm_class
        from lm_eval.api.registry import get_model

        assert FoxacpLM is _lm_class() is get_model("foxacp")
        """
    )


def test_without_lm_eval_the_harness_imports_and_registers_nothing():
    run_python(
        """
        import sys

        sys.modules["lm_eval"] = None  # what an environment without lm_eval gives: ImportError
        import foxacp.eval.harness as harness

        assert harness.register_with_lm_eval() is False
        try:
            harness._lm_class()
        except ImportError as e:
            assert "pip install lm-eval" in str(e)
        else:
            raise AssertionError("no ImportError without lm_eval")
        """
    )


def test_an_older_lm_eval_with_a_plain_registry_gets_the_class_at_import():
    """lm_eval before its lazy registry: register_model fills a dict, which lm_eval reads as it is."""
    run_python(
        """
        import sys
        import types

        registry = types.ModuleType("lm_eval.api.registry")
        registry.MODEL_REGISTRY = {}

        def register_model(*names):
            def decorate(cls):
                registry.MODEL_REGISTRY.update(dict.fromkeys(names, cls))
                return cls

            return decorate

        registry.register_model = register_model
        model = types.ModuleType("lm_eval.api.model")
        model.LM = type("LM", (), {})
        lm_eval, api = types.ModuleType("lm_eval"), types.ModuleType("lm_eval.api")
        lm_eval.api, api.registry, api.model = api, registry, model
        sys.modules.update({"lm_eval": lm_eval, "lm_eval.api": api, "lm_eval.api.registry": registry})
        sys.modules["lm_eval.api.model"] = model

        import foxacp.eval.harness as harness

        assert list(registry.MODEL_REGISTRY) == ["foxacp"], registry.MODEL_REGISTRY
        assert registry.MODEL_REGISTRY["foxacp"] is harness.FoxacpLM and harness.register_with_lm_eval()
        """
    )


def test_lm_eval_runs_a_generate_until_task_on_the_model_it_finds_by_name(tmp_path, monkeypatch, tiny_loader):
    """simple_evaluate(model="foxacp", model_args={...}) after the import alone, on a local task whose requests carry
    lm_eval's generation options; the answers are the scorer's."""
    pytest.importorskip("lm_eval")
    import json

    import lm_eval
    from lm_eval.tasks import TaskManager

    from foxacp.data import build_tokenizer
    from foxacp.eval.harness import FoxScorer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    docs = [{"question": f"{a} plus {b} is", "answer": f" {a + b}"} for a, b in [(1, 2), (3, 4)]]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "gen.yaml").write_text(
        "task: foxacp_tiny_gen\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'test.jsonl'}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 6\n  do_sample: false\n  temperature: 0.0\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    model = tiny_loader(train_len=32)
    out = lm_eval.simple_evaluate(
        model="foxacp",
        model_args={"path": "RUN"},
        tasks=["foxacp_tiny_gen"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
    )
    scorer = FoxScorer(model, build_tokenizer("byte"), max_len=32)
    assert len(out["samples"]["foxacp_tiny_gen"]) == len(docs)
    for sample in out["samples"]["foxacp_tiny_gen"]:
        (context, options) = sample["arguments"][0]
        assert sample["resps"] == [scorer.generate_until([(context, options)])]
