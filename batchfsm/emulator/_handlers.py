"""What answers each request line: the handler seam, and the default fake.

A handler gets one request and answers like the endpoint would: a response
body of the endpoint's shape with token usage, or a 4xx with the API's error
body for a request the endpoint would reject. Two shapes are accepted: the
async seam (:data:`AsyncHandler`, one :class:`RequestLine` in, one
:class:`Reply` out), which the worker runs many at a time, and the older
synchronous :data:`Handler`, run one after another. The default fake,
:func:`default_handler` (and :func:`fake_handler`, the same answers on the
async seam), is deterministic; the upstream handler
(:class:`~batchfsm.emulator.UpstreamHandler`) sends each line to a server.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, overload

import attrs

from .._endpoints import CATALOGUE, one_each
from .._nesting import MAX_DEPTH, deeper_than, str_length
from ._pieces import Streamed

__all__ = [
    "EMBEDDING_SIZES",
    "MAX_INPUTS_PER_REQUEST",
    "AsyncHandler",
    "Handler",
    "Reply",
    "RequestLine",
    "default_handler",
    "fake_handler",
    "is_async",
    "prompt_tokens",
    "sized",
]

#: The embeddings endpoint takes at most this many inputs in one request.
MAX_INPUTS_PER_REQUEST = 2_048
#: Each embedding model's full size: the most ``dimensions`` may ask for.
#: Keyed by model, not endpoint (the size is the model's); checked on import
#: to cover exactly the embeddings endpoint's models.
EMBEDDING_SIZES = one_each(
    "embedding size",
    (
        ("text-embedding-3-small", 1_536),
        ("text-embedding-3-large", 3_072),
        ("text-embedding-ada-002", 1_536),
    ),
    keys=CATALOGUE["/v1/embeddings"].models,
)


@attrs.frozen
class Reply:
    """One request's answer: HTTP status, body, and the tokens it took."""

    status_code: int
    body: Mapping[str, Any]
    input_tokens: int = 0
    output_tokens: int = 0


#: ``handler(endpoint, body, custom_id, now) -> Reply``: the synchronous shape.
Handler = Callable[[str, Mapping[str, Any], str, int], Reply]


@attrs.frozen
class RequestLine:
    """One request line of a batch, as a handler gets it.

    Attributes:
        custom_id: the line's ``custom_id``.
        method: its ``method`` (always ``"POST"``: validation saw to it).
        url: its ``url``, which is the batch's endpoint (``/v1/...``).
        body: its ``body``: the request the endpoint gets.
        at: the emulated time (Unix seconds) at which it runs.
    """

    custom_id: str
    method: str
    url: str
    body: Mapping[str, Any]
    at: int


#: ``async handler(request: RequestLine) -> Reply``: the seam the worker runs
#: many at a time (see :func:`fake_handler` for a runnable example).
AsyncHandler = Callable[[RequestLine], Awaitable[Reply]]


def is_async(handler: object) -> bool:
    """Whether ``handler`` is an :data:`AsyncHandler` (a coroutine function).

    A function defined with ``async def``, or an object whose ``__call__``
    is one.

    Example:
        >>> is_async(fake_handler), is_async(default_handler)
        (True, False)
    """
    call = getattr(handler, "__call__", None)  # noqa: B004 - the method itself
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _tokens(value: Any) -> int:
    # About four characters of str(value) a token, at least one: stable and
    # cheap. Deeper than this Python's str() goes, the same length by a loop.
    try:
        length = len(str(value))
    except RecursionError:
        length = str_length(value)
    return max(1, length // 4)


def _embedding_inputs(body: Mapping[str, Any]) -> list[Any]:
    value = body.get("input")
    return value if isinstance(value, list) else [value]


# The input tokens of each endpoint's request: what the default handler
# reports in its usage, and what a batch holds of the enqueued token limit.
def _messages_tokens(body: Mapping[str, Any]) -> int:
    return _tokens(body.get("messages"))


def _input_tokens(body: Mapping[str, Any]) -> int:
    return _tokens(body.get("input"))


def _embeddings_tokens(body: Mapping[str, Any]) -> int:
    return sum(_tokens(text) for text in _embedding_inputs(body))


def _prompt_text_tokens(body: Mapping[str, Any]) -> int:
    return _tokens(_text(body, "prompt"))


def _input_text_tokens(body: Mapping[str, Any]) -> int:
    return _tokens(_text(body, "input"))


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    return _tokens(body.get("prompt"))


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def _bad_request(message: str, param: str | None) -> Reply:
    return Reply(
        400,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        },
    )


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value:
        return " ".join(map(str, value))
    return None


def _chat(body: Mapping[str, Any], custom_id: str, now: int) -> Reply:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad_request("'messages' must be a non-empty array.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            return _bad_request(
                f"Invalid value for 'messages[{index}]': expected an object "
                "with a 'role'.",
                f"messages[{index}]",
            )
    prompt = _messages_tokens(body)
    reply = f"Deterministic reply to {custom_id}."
    completion = _tokens(reply)
    return Reply(
        200,
        {
            "id": f"chatcmpl-{_digest(custom_id, now)}",
            "object": "chat.completion",
            "created": now,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        },
        prompt,
        completion,
    )


def _responses(body: Mapping[str, Any], custom_id: str, now: int) -> Reply:
    if body.get("input") in (None, "", []):
        return _bad_request("Missing required parameter: 'input'.", "input")
    prompt = _input_tokens(body)
    reply = f"Deterministic reply to {custom_id}."
    completion = _tokens(reply)
    return Reply(
        200,
        {
            "id": f"resp_{_digest(custom_id, now)}",
            "object": "response",
            "created_at": now,
            "status": "completed",
            "model": body["model"],
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{_digest(custom_id)}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": reply, "annotations": []}
                    ],
                }
            ],
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + completion,
            },
        },
        prompt,
        completion,
    )


def _embeddings(
    body: Mapping[str, Any], custom_id: str, now: int, default: int | None = None
) -> Reply:
    # ``default``: the dimensions when the request names none (None: the
    # model's own size, as the live API answers), at most the model's size.
    value = body.get("input")
    inputs = _embedding_inputs(body)
    if value is None or not inputs or not all(isinstance(i, str) and i for i in inputs):
        return _bad_request("'input' must be a non-empty string or array.", "input")
    if len(inputs) > MAX_INPUTS_PER_REQUEST:
        return _bad_request(
            f"'input' holds {len(inputs)} items; at most {MAX_INPUTS_PER_REQUEST} "
            "are allowed per request.",
            "input",
        )
    model = str(body.get("model"))
    size = EMBEDDING_SIZES.get(model, 1536)
    if "dimensions" in body and model == "text-embedding-ada-002":
        # The live API's answer, param null (as recorded in R2R #768 and
        # JMTEB #14): even ``"dimensions": null`` is refused.
        return _bad_request("This model does not support specifying dimensions.", None)
    dimensions = body.get("dimensions", size if default is None else min(default, size))
    if type(dimensions) is not int or not 1 <= dimensions <= size:
        return _bad_request(
            f"'dimensions' must be an integer in 1..{size} for {model}.",
            "dimensions",
        )
    prompt = _embeddings_tokens(body)
    return Reply(
        200,
        {
            "object": "list",
            "data": Embeddings(inputs, dimensions),
            "model": body["model"],
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        },
        prompt,
        0,
    )


def _vector_values(text: str) -> list[float]:
    # An embedding repeats these 32 values (its input's SHA-256, byte by byte).
    return [
        round(byte / 255 - 0.5, 6) for byte in hashlib.sha256(text.encode()).digest()
    ]


class Embeddings(Streamed):
    """The ``data`` of an embeddings answer, each vector made only when read.

    An answer of 2,048 inputs of 3,072 dimensions is 6 million numbers: as
    Python floats, some 200 MB. Here each item is made when it is read, and
    its JSON text is written a vector at a time (:meth:`json_pieces`):
    the same text ``json.dumps`` gives for the items.
    """

    def __init__(self, inputs: list[str], dimensions: int) -> None:
        self._inputs = inputs
        self._dimensions = dimensions

    def __len__(self) -> int:
        return len(self._inputs)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # IndexError as a list's, negatives too
        values = _vector_values(self._inputs[index])
        vector = [values[i % 32] for i in range(self._dimensions)]
        return {"object": "embedding", "index": index, "embedding": vector}

    def json_pieces(self) -> Iterator[str]:
        yield "["
        whole, rest = divmod(self._dimensions, 32)
        for index, text in enumerate(self._inputs):
            values = [json.dumps(v) for v in _vector_values(text)]
            run = ",".join(values)
            vector = ",".join([run] * whole + values[:rest])
            yield (
                f'{"," if index else ""}{{"object":"embedding","index":{index},'
                f'"embedding":[{vector}]}}'
            )
        yield "]"


def _completions(body: Mapping[str, Any], custom_id: str, now: int) -> Reply:
    prompt_text = _text(body, "prompt")
    if prompt_text is None:
        return _bad_request("Missing required parameter: 'prompt'.", "prompt")
    prompt = _prompt_text_tokens(body)
    reply = f" Deterministic completion for {custom_id}."
    completion = _tokens(reply)
    return Reply(
        200,
        {
            "id": f"cmpl-{_digest(custom_id, now)}",
            "object": "text_completion",
            "created": now,
            "model": body["model"],
            "choices": [
                {"text": reply, "index": 0, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        },
        prompt,
        completion,
    )


def _moderations(body: Mapping[str, Any], custom_id: str, now: int) -> Reply:
    text = _text(body, "input")
    if text is None:
        return _bad_request("Missing required parameter: 'input'.", "input")
    return Reply(
        200,
        {
            "id": f"modr-{_digest(custom_id, now)}",
            "model": body["model"],
            "results": [{"flagged": False, "categories": {}, "category_scores": {}}],
        },
        _input_text_tokens(body),
        0,
    )


def _media(body: Mapping[str, Any], custom_id: str, now: int) -> Reply:
    if _text(body, "prompt") is None:
        return _bad_request("Missing required parameter: 'prompt'.", "prompt")
    return Reply(
        200,
        {"created": now, "data": [{"b64_json": "", "revised_prompt": body["prompt"]}]},
        _prompt_tokens(body),
        0,
    )


#: What answers each endpoint: checked on import, exactly one each.
_BY_ENDPOINT = one_each(
    "handler",
    (
        ("/v1/chat/completions", _chat),
        ("/v1/responses", _responses),
        ("/v1/embeddings", _embeddings),
        ("/v1/completions", _completions),
        ("/v1/moderations", _moderations),
        ("/v1/images/generations", _media),
        ("/v1/images/edits", _media),
        ("/v1/videos", _media),
    ),
)


#: How many input tokens each endpoint's request holds: checked on import too.
_PROMPTS = one_each(
    "prompt token count",
    (
        ("/v1/chat/completions", _messages_tokens),
        ("/v1/responses", _input_tokens),
        ("/v1/embeddings", _embeddings_tokens),
        ("/v1/completions", _prompt_text_tokens),
        ("/v1/moderations", _input_text_tokens),
        ("/v1/images/generations", _prompt_tokens),
        ("/v1/images/edits", _prompt_tokens),
        ("/v1/videos", _prompt_tokens),
    ),
)


def prompt_tokens(endpoint: str, body: Mapping[str, Any]) -> int:
    """The input tokens of one request: what :func:`default_handler` reports.

    About four characters a token, at least one: of the chat ``messages``
    value, of the ``input`` (each embeddings input counted alone), or of the
    ``prompt``, each as Python's ``str()`` writes it. Deterministic and cheap,
    not a tokenizer. The default handler's ``usage.input_tokens`` for a
    request it answers is exactly this count, at any depth of nesting and on
    every Python (however deep its own ``str()`` goes).

    Example:
        >>> prompt_tokens("/v1/embeddings", {"input": ["x" * 40, "y" * 8]})
        12
    """
    return _PROMPTS[endpoint](body)


def default_handler(
    endpoint: str, body: Mapping[str, Any], custom_id: str, now: int
) -> Reply:
    """Answer like the endpoint would, deterministically.

    An embedding has the model's own size (:data:`EMBEDDING_SIZES`: 1,536
    for ``text-embedding-3-small`` and ``ada-002``, 3,072 for ``-3-large``),
    as the live API answers, unless the request asks for fewer with
    ``dimensions`` (``Emulator(embedding_dimensions=N)`` makes them shorter
    when the request names none); each value is derived from its input's
    SHA-256: the same text, the same vector. A body nested deeper than 512
    levels is a 400, on every Python (however deep its own recursion goes).

    Example:
        >>> chat = {"model": "gpt-4o-mini",
        ...         "messages": [{"role": "user", "content": "hi"}]}
        >>> reply = default_handler("/v1/chat/completions", chat, "r1", 1700000000)
        >>> reply.status_code, reply.body["choices"][0]["message"]["role"]
        (200, 'assistant')
        >>> del chat["messages"]
        >>> default_handler("/v1/chat/completions", chat, "r1", 0).status_code
        400
    """
    if deeper_than(body, MAX_DEPTH):
        return _bad_request(
            f"The request body is nested deeper than {MAX_DEPTH} levels.", None
        )
    return _BY_ENDPOINT[endpoint](body, custom_id, now)


def _answer_sized(
    endpoint: str, body: Mapping[str, Any], custom_id: str, now: int, *, dimensions: int
) -> Reply:
    if endpoint == "/v1/embeddings":
        return _embeddings(body, custom_id, now, dimensions)
    return default_handler(endpoint, body, custom_id, now)


async def _answer_sized_async(request: RequestLine, *, dimensions: int) -> Reply:
    return _answer_sized(
        request.url, request.body, request.custom_id, request.at, dimensions=dimensions
    )


def sized(handler: Any, dimensions: int | None) -> Any:
    """``handler`` (the default fake, sync or async) with embeddings of ``dimensions``.

    The dimensions an embedding gets when its request names none (at most
    the model's size); None: the model's size. Only the fake's answers can
    be sized: a handler of one's own answers for itself (``ValueError``).
    """
    if dimensions is None:
        return handler
    if handler is default_handler:
        return functools.partial(_answer_sized, dimensions=dimensions)
    if handler is fake_handler:
        return functools.partial(_answer_sized_async, dimensions=dimensions)
    raise ValueError(
        "embedding_dimensions sizes the default handler's embeddings; a "
        "handler of your own answers with the dimensions it chooses"
    )


async def fake_handler(request: RequestLine) -> Reply:
    """:func:`default_handler`'s answers, on the async seam.

    What the :class:`~batchfsm.emulator.Emulator` runs unless told otherwise
    is :func:`default_handler`; pass ``handler=fake_handler`` (or your own
    ``async def``) to have the worker run the batch's requests many at a time.
    A handler of your own takes a :class:`RequestLine` and returns a
    :class:`Reply`; an exception it raises becomes that request's 500 line.

    Example:
        >>> import asyncio
        >>> line = RequestLine("r1", "POST", "/v1/embeddings",
        ...                    {"model": "text-embedding-3-small", "input": "hi"}, 0)
        >>> reply = asyncio.run(fake_handler(line))
        >>> reply.status_code, reply.input_tokens
        (200, 1)

        A handler of your own, plugged into an emulator:

        >>> from batchfsm.emulator import Emulator
        >>> async def shout(request: RequestLine) -> Reply:
        ...     text = request.body["messages"][-1]["content"].upper()
        ...     message = {"role": "assistant", "content": text}
        ...     body = {"object": "chat.completion", "model": request.body["model"],
        ...             "choices": [{"index": 0, "finish_reason": "stop",
        ...                          "message": message}]}
        ...     return Reply(200, body, input_tokens=1, output_tokens=1)
        >>> emu = Emulator(handler=shout)
        >>> line = ('{"custom_id": "a", "method": "POST",'
        ...         ' "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini",'
        ...         ' "messages": [{"role": "user", "content": "hi"}]}}')
        >>> upload = emu.create_file(line.encode(), "in.jsonl", "batch")
        >>> batch = emu.create_batch(input_file_id=upload.id,
        ...                          endpoint="/v1/chat/completions")
        >>> emu.clock.advance(60)
        >>> done = emu.retrieve_batch(batch.id)
        >>> out = emu.file_content(done.output_file_id).decode()
        >>> done.status.value, '"content":"HI"' in out
        ('completed', True)
    """
    return default_handler(request.url, request.body, request.custom_id, request.at)
