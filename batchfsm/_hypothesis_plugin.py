"""Hypothesis' plugin hook: ``st.from_type(batchfsm.Batch)`` works with no import.

Hypothesis runs this when it is imported (entry point group ``hypothesis``, see
``pyproject.toml``). It only registers resolvers; nothing is drawn and
``batchfsm.strategies`` is imported only when a strategy is first asked for.
"""

from __future__ import annotations

from typing import Any


def _hypothesis_setup_hook() -> None:
    from hypothesis import strategies as st

    from ._model import Batch

    def resolve_batch(_: type[Any]) -> st.SearchStrategy[Batch]:
        from .strategies import batches

        return batches()

    st.register_type_strategy(Batch, resolve_batch)
