import importlib
import types

import pytest

import batchfsm


def test_all_is_exactly_the_public_names():
    exported = {name for name in dir(batchfsm) if not name.startswith("_")}
    # Submodules imported as a side effect of loading the package are not API.
    modules = {
        name for name in exported if type(getattr(batchfsm, name)).__name__ == "module"
    }
    assert exported - modules == set(batchfsm.__all__)


def test_every_public_name_is_documented():
    for name in batchfsm.__all__:
        obj = getattr(batchfsm, name)
        if callable(obj) and not isinstance(obj, frozenset):
            assert obj.__doc__, name
            assert ">>>" in obj.__doc__, f"{name} has no example"


@pytest.mark.parametrize(
    "name",
    [
        "batchfsm.strategies",
        "batchfsm.testing",
        "batchfsm.emulator",
        "batchfsm.conformance",
    ],
)
def test_each_public_subpackage_exports_exactly_what_it_defines(name):
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(set(module.__all__)), "listed twice"
    for public in module.__all__:
        obj = getattr(module, public)  # lazy names resolve too
        if callable(obj) and isinstance(obj, (type, types.FunctionType)):
            assert obj.__doc__, f"{name}.{public} has no docstring"
    # Everything the package defines and binds at its top is in __all__;
    # names imported from elsewhere (typing, the core) are not its API.
    defined_here = {
        public
        for public in dir(module)
        if not public.startswith("_")
        and not isinstance(getattr(module, public), types.ModuleType)
        and (getattr(getattr(module, public), "__module__", None) or "").startswith(
            name
        )
    }
    assert defined_here <= set(module.__all__)
