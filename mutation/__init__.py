"""Mutation testing of the core: ``python -m mutation.run`` (see docs/mutation.rst)."""
