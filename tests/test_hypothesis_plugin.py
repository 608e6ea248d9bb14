"""A user's test: no import of batchfsm.strategies, only hypothesis' from_type.

Runs in the main suite and alone in the ``plugin`` tox environment, where only
``batchfsm[hypothesis]`` is installed.
"""

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

import batchfsm


@given(st.from_type(batchfsm.Batch))
def test_from_type_draws_consistent_batches(batch):
    assert isinstance(batch, batchfsm.Batch)
    assert batchfsm.check(batch) == []


def test_the_strategy_comes_from_the_entry_point_not_an_import():
    code = (
        "import sys\n"
        "from hypothesis import strategies as st\n"
        "import batchfsm\n"
        "assert 'batchfsm.strategies' not in sys.modules\n"
        "strategy = st.from_type(batchfsm.Batch)\n"
        "print(repr(strategy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("lifecycles()")
