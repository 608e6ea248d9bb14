"""tox's inline plugin for this project: under CI a missing Python fails.

``tox.ini`` skips the environments of Pythons this machine lacks (a
contributor with only 3.11 still runs everything else); with ``CI`` set, as on
the CI machine (``.ci/run`` makes 3.13 and 3.14 with ``.ci/pythons``), an
environment whose Python is missing fails instead of being skipped, so that no
Python we claim goes untested while the run says "congratulations".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tox.config.loader.memory import MemoryLoader
from tox.plugin import impl

if TYPE_CHECKING:
    from tox.config.sets import ConfigSet
    from tox.session.state import State


@impl
def tox_add_core_config(core_conf: ConfigSet, state: State) -> None:
    """With ``CI`` set, ``skip_missing_interpreters = false`` overrides tox.ini's."""
    if os.environ.get("CI"):
        core_conf.loaders.insert(0, MemoryLoader(skip_missing_interpreters=False))
