"""Run Python with some installed modules made unimportable, for real.

A finder at the head of ``sys.meta_path`` refuses the named top-level modules,
so ``import httpx2`` fails the way it does in an install without the extra.
"""

import sys

_FINDER = """
import sys

class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Missing())
"""


def without(*modules: str) -> str:
    """Source that makes ``modules`` unimportable from here on."""
    return _FINDER.format(blocked=set(modules))


def batchfsm_without(*modules: str) -> list[str]:
    """The ``batchfsm`` command, in a fresh interpreter lacking ``modules``."""
    main = "from batchfsm._cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return [sys.executable, "-c", without(*modules) + main]
