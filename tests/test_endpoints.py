"""The model catalogue is the official client's model literals, no more, no less."""

import re
import typing
from importlib.metadata import version

import openai.types as t
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types import completion_create_params
from openai.types.shared import ChatModel, ResponsesModel

from batchfsm._endpoints import (
    CATALOGUE,
    ENDPOINT_MODELS,
    ENDPOINTS,
    SOURCE,
    one_each,
)
from batchfsm.emulator._handlers import _BY_ENDPOINT, EMBEDDING_SIZES


def literals(annotation: object) -> set[str]:
    """Every string in the Literal types inside ``annotation``."""
    if typing.get_origin(annotation) is typing.Literal:
        return {a for a in typing.get_args(annotation) if isinstance(a, str)}
    found: set[str] = set()
    for argument in typing.get_args(annotation):
        found |= literals(argument)
    return found


def completions_models() -> set[str]:
    hints = typing.get_type_hints(
        completion_create_params.CompletionCreateParamsBase, include_extras=True
    )
    return literals(hints["model"])


CLIENT_TYPES = {
    "/v1/chat/completions": literals(ChatModel),
    "/v1/completions": completions_models(),
    "/v1/embeddings": literals(t.EmbeddingModel),
    "/v1/responses": literals(ResponsesModel),
    "/v1/moderations": literals(t.ModerationModel),
    "/v1/images/generations": literals(t.ImageModel),
    "/v1/images/edits": literals(t.ImageModel),
    "/v1/videos": literals(t.VideoModel),
}


def test_the_catalogue_was_taken_from_the_installed_client():
    assert f"openai {version('openai')}" == SOURCE


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_catalogue_matches_the_client_types(endpoint):
    ours, theirs = ENDPOINT_MODELS[endpoint], CLIENT_TYPES[endpoint]
    assert not theirs - ours, f"missing from the catalogue: {sorted(theirs - ours)}"
    assert not ours - theirs, f"not in the client's types: {sorted(ours - theirs)}"


def test_every_batch_endpoint_of_the_client_is_served():
    hints = typing.get_type_hints(
        t.batch_create_params.BatchCreateParams, include_extras=True
    )
    assert set(ENDPOINTS) == literals(hints["endpoint"])


def test_dated_snapshots_are_models_and_completions_serves_only_legacy_ones():
    chat = ENDPOINT_MODELS["/v1/chat/completions"]
    assert {"gpt-4o-2024-05-13", "gpt-3.5-turbo-0125", "gpt-4o-mini-2024-07-18"} <= chat
    assert ENDPOINT_MODELS["/v1/completions"] == {
        "gpt-3.5-turbo-instruct",
        "davinci-002",
        "babbage-002",
    }


@given(st.sampled_from(ENDPOINTS))
def test_an_endpoint_without_its_handler_is_refused(endpoint):
    # What the handlers' import checks: each endpoint has exactly one.
    handlers = list(_BY_ENDPOINT.items())
    without = [(path, h) for path, h in handlers if path != endpoint]
    with pytest.raises(ValueError, match=re.escape(f"none for {endpoint!r}")):
        one_each("handler", without)
    twice = [*handlers, (endpoint, _BY_ENDPOINT[endpoint])]
    with pytest.raises(ValueError, match=re.escape(f"two for {endpoint!r}")):
        one_each("handler", twice)
    assert one_each("handler", handlers) == _BY_ENDPOINT


def test_a_part_for_no_endpoint_is_refused():
    parts = [*_BY_ENDPOINT.items(), ("/v1/nowhere", _BY_ENDPOINT["/v1/videos"])]
    with pytest.raises(ValueError, match="'/v1/nowhere' is not known"):
        one_each("handler", parts)


@given(st.sampled_from(sorted(CATALOGUE["/v1/embeddings"].models)))
def test_every_embedding_model_has_its_size(model):
    models = CATALOGUE["/v1/embeddings"].models
    sizes = [(m, size) for m, size in EMBEDDING_SIZES.items() if m != model]
    with pytest.raises(ValueError, match=re.escape(f"none for {model!r}")):
        one_each("embedding size", sizes, keys=models)
