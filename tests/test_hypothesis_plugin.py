"""A user's test: no import of batchfsm.strategies, only hypothesis' from_type.

Runs in the main suite and alone in the ``plugin`` tox environment, where only
``batchfsm[hypothesis]`` is installed, from the wheel.
"""

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import batchfsm


@given(st.from_type(batchfsm.Batch))
def test_from_type_draws_consistent_batches(batch):
    assert isinstance(batch, batchfsm.Batch)
    assert batchfsm.check(batch) == []


def test_the_strategy_comes_from_the_entry_point_not_an_import(tmp_path):
    code = (
        "import sys\n"
        "from hypothesis import strategies as st\n"
        "import batchfsm\n"
        "assert 'batchfsm.strategies' not in sys.modules\n"
        "strategy = st.from_type(batchfsm.Batch)\n"
        "print(repr(strategy))\n"
    )
    out = subprocess.run(
        # cwd: `-c` puts it first on sys.path; this tree's batchfsm is not the wheel's
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("lifecycles()")


def test_batchfsm_is_the_installed_one_where_the_env_says():
    # tox -e plugin names its site-packages: the wheel there is what is tested, not
    # this tree (which pyproject.toml's `pythonpath` would put first)
    installed_in = os.environ.get("BATCHFSM_INSTALLED_IN")
    where = Path(batchfsm.__file__).parent.parent
    assert installed_in is None or where == Path(installed_in)
