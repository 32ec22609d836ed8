"""The lm-evaluation-harness adapter built as lm_eval's command line builds it: ``--model_args`` parsed into a dict
(lm_eval 0.4.13) reaches foxacp_lm as the string form does."""

from __future__ import annotations

import pytest


def test_dict_model_args_reach_the_scorer_as_the_string_form_does(monkeypatch):
    pytest.importorskip("lm_eval")
    from foxacp.eval import harness

    seen = []
    monkeypatch.setattr(harness, "foxacp_lm", lambda **kw: seen.append(kw))
    cls = harness._lm_class()
    cls.create_from_arg_string("path=RUN,max_len=64", {"batch_size": 8, "device": "cpu"})
    cls.create_from_arg_obj({"path": "RUN", "max_len": 64}, {"batch_size": 8, "max_batch_size": None, "device": "cpu"})
    assert seen[1] == seen[0] == {"path": "RUN", "max_len": 64, "batch_size": 8, "device": "cpu"}
