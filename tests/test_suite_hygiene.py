"""The test suite itself: only tests/conftest.py chooses the Triton interpreter.

A test module that sets TRITON_INTERPRET on import switches every kernel imported after it to the interpreter on
a GPU machine too, so `pytest -m gpu tests` ran 60 GPU tests through the interpreter (and failed them) until
three such modules were fixed."""

import re
from pathlib import Path

TESTS = Path(__file__).parent
SETS_INTERPRET = re.compile(r"""environ(\[["']TRITON_INTERPRET["']\]\s*=|\.setdefault\(\s*["']TRITON_INTERPRET)""")


def test_only_conftest_sets_the_interpreter():
    offenders = [
        str(p.relative_to(TESTS))
        for p in sorted(TESTS.rglob("*.py"))
        if p.name != "conftest.py" and SETS_INTERPRET.search(p.read_text())
    ]
    assert offenders == []
