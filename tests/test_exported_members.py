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
