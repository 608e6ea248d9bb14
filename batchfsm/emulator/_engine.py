"""The emulator: a deterministic Batch service in one object.

Work happens lazily: every call first brings each batch up to the clock's
``now`` (validation, one request per ``request_seconds``, finalizing, the
cancel grace, expiry), so with a :class:`VirtualClock` the same calls give
byte-identical batches and files. Batches move only through
:func:`batchfsm.advance` and are written with a compare-and-set on their
status, so a cancel racing the worker has exactly one winner.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

import attrs

from .._endpoints import ENDPOINT_MODELS
from .._errors import InvalidTransition
from .._invariants import COMPLETION_WINDOWS, _check, check_step
from .._lifecycle import advance, new_batch
from .._model import (
    METADATA_MAX_PAIRS,
    TERMINAL_STATUSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchRequestCounts,
    BatchStatus,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
    metadata_problems,
)
from .._table import Event
from ._clock import Clock, VirtualClock
from ._handlers import Handler, Reply, default_handler
from ._stores import BatchStore, FileObject, FileStore, MemoryBatchStore
from ._validate import DEFAULT_MODELS, Request, validate_input

__all__ = ["ApiError", "Emulator"]

S = BatchStatus
ENDPOINTS = tuple(ENDPOINT_MODELS)
#: The range of ``seconds`` the API accepts in ``expires_after`` (files) and
#: ``output_expires_after`` (batches): one hour to thirty days.
EXPIRES_AFTER_SECONDS = (3_600, 2_592_000)


class ApiError(Exception):
    """An answer of the API other than success: HTTP status and error body.

    Example:
        >>> ApiError(404, "No batch found with id 'batch_x'.").body["error"]["type"]
        'invalid_request_error'
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code, message)
        self.status_code = status_code
        self.body = body or {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        }

    def __str__(self) -> str:
        return f"{self.status_code}: {self.body['error']['message']}"


@attrs.define
class _Job:
    """The work of one batch not yet ended."""

    requests: list[Request] = attrs.field(factory=list)
    output_expires_after: int | None = None  # seconds after the batch's creation
    done: int = 0
    output: list[str] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    input_tokens: int = 0
    output_tokens: int = 0


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _encodable(value: str) -> bool:
    # JSON may carry a lone surrogate ("\ud800"); no answer could ever hold it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _server_error(exc: Exception) -> Reply:
    return Reply(
        500,
        {
            "error": {
                "message": f"The model failed to answer: {exc!r}"[:500],
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    )


class Emulator:
    """A deterministic, in-process Batch service (files and batches).

    Example:
        >>> emu = Emulator()
        >>> line = ('{"custom_id": "r1", "method": "POST", "url": "/v1/embeddings",'
        ...         ' "body": {"model": "text-embedding-3-small", "input": "hi"}}')
        >>> upload = emu.create_file(line.encode(), "in.jsonl", "batch")
        >>> batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/embeddings")
        >>> emu.clock.advance(60)
        >>> done = emu.retrieve_batch(batch.id)
        >>> done.status, done.request_counts.completed
        (<BatchStatus.COMPLETED: 'completed'>, 1)
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        handler: Handler = default_handler,
        models: Mapping[str, frozenset[str]] = DEFAULT_MODELS,
        store: BatchStore | None = None,
        seed: int = 0,
        validation_seconds: int = 1,
        request_seconds: int = 1,
        finalizing_seconds: int = 1,
        cancel_grace_seconds: int = 5,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        self.handler = handler
        self.models = models
        self.batches: BatchStore = store if store is not None else MemoryBatchStore()
        self.files = FileStore()
        self.seed = seed
        self.validation_seconds = validation_seconds
        self.request_seconds = request_seconds
        self.finalizing_seconds = finalizing_seconds
        self.cancel_grace_seconds = cancel_grace_seconds
        self._jobs: dict[str, _Job] = {}
        self._counter = 0
        self._lock = threading.RLock()

    # -- ids and time ----------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock.now())

    def _id(self, prefix: str, length: int = 32) -> str:
        self._counter += 1
        digest = hashlib.sha256(f"{self.seed}:{prefix}:{self._counter}".encode())
        return prefix + digest.hexdigest()[:length]

    # -- files -----------------------------------------------------------------------

    def create_file(
        self,
        content: bytes,
        filename: str,
        purpose: str,
        expires_after: int | None = None,
    ) -> FileObject:
        """Store an upload; returns its File object."""
        if purpose not in (
            "batch",
            "batch_output",
            "assistants",
            "fine-tune",
            "vision",
            "user_data",
            "evals",
        ):
            raise _invalid("purpose", f"Invalid value for 'purpose': {purpose!r}.")
        if not _encodable(filename):
            filename = filename.encode("utf-8", "replace").decode("utf-8")
        with self._lock:
            now = self._now()
            return self.files.add(
                FileObject(
                    id=self._id("file-", 22),
                    bytes=len(content),
                    created_at=now,
                    filename=filename,
                    purpose=purpose,
                    expires_at=None if expires_after is None else now + expires_after,
                ),
                content,
            )

    def list_files(self) -> list[FileObject]:
        """Every file, newest first."""
        with self._lock:
            return self.files.list()

    def retrieve_file(self, file_id: str) -> FileObject:
        """The File object; 404 if there is none."""
        with self._lock:
            file = self.files.get(file_id)
        if file is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return file

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a file; 404 if there is none."""
        with self._lock:
            self.retrieve_file(file_id)
            content = self.files.content(file_id)
        assert content is not None
        return content

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a file; the API's deletion answer."""
        with self._lock:
            deleted = self.files.delete(file_id)
        if not deleted:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return {"id": file_id, "object": "file", "deleted": True}

    # -- batches ---------------------------------------------------------------------

    def create_batch(
        self,
        *,
        input_file_id: Any,
        endpoint: Any,
        completion_window: Any = "24h",
        metadata: Any = None,
        output_expires_after: Any = None,
    ) -> Batch:
        """Create a batch; 400 with ``param`` naming a bad parameter.

        Problems with the input file are not create errors: the batch is
        created and fails validation (as the live API does).
        """
        if (
            not isinstance(input_file_id, str)
            or not input_file_id
            or not _encodable(input_file_id)
        ):
            raise _invalid(
                "input_file_id",
                "'input_file_id' must be a non-empty string.",
                "invalid_type",
            )
        if endpoint not in ENDPOINTS:
            raise _invalid(
                "endpoint",
                f"Invalid value for 'endpoint': {endpoint!r}; "
                f"supported: {', '.join(ENDPOINTS)}.",
            )
        if completion_window not in COMPLETION_WINDOWS:
            raise _invalid(
                "completion_window",
                f"Invalid value for 'completion_window': {completion_window!r}; "
                "only '24h' is supported.",
            )
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise _invalid(
                    "metadata", "'metadata' must be an object.", "invalid_type"
                )
            problems = metadata_problems(metadata)
            if not problems and not all(
                _encodable(k) and _encodable(v) for k, v in metadata.items()
            ):
                problems = [("", "keys and values must be valid UTF-8 text")]
            if problems:
                key, message = problems[0]
                raise _invalid(
                    f"metadata.{key}" if key else "metadata",
                    f"Invalid metadata: {message} "
                    f"(at most {METADATA_MAX_PAIRS} pairs).",
                )
        if output_expires_after is not None:
            low, high = EXPIRES_AFTER_SECONDS
            if (
                not isinstance(output_expires_after, dict)
                or output_expires_after.get("anchor") != "created_at"
                or type(output_expires_after.get("seconds")) is not int
                or not low <= output_expires_after["seconds"] <= high
            ):
                raise _invalid(
                    "output_expires_after",
                    "'output_expires_after' must be "
                    f"{{'anchor': 'created_at', 'seconds': {low}..{high}}}.",
                )
        with self._lock:
            self._catch_up()
            batch = new_batch(
                id=self._id("batch_"),
                input_file_id=input_file_id,
                endpoint=endpoint,
                created_at=self._now(),
                metadata=metadata,
            )
            self.batches.insert(batch)
            self._jobs[batch.id] = _Job(
                output_expires_after=(
                    output_expires_after["seconds"] if output_expires_after else None
                )
            )
            return batch

    def retrieve_batch(self, batch_id: str) -> Batch:
        """The batch now; 404 if there is none."""
        with self._lock:
            self._catch_up()
            return self._get(batch_id)

    def list_batches(
        self, *, after: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        """A page of batches, newest first: the API's list object (as dicts)."""
        if type(limit) is not int or not 1 <= limit <= 100:
            raise _invalid(
                "limit", f"Invalid value for 'limit': {limit!r}; expected 1..100."
            )
        with self._lock:
            self._catch_up()
            if after is not None and self.batches.get(after) is None:
                raise _invalid(
                    "after", f"Invalid value for 'after': no batch {after!r}."
                )
            page, has_more = self.batches.page(after, limit)
            from .._convert import to_dict

            data = [to_dict(b) for b in page]
            return {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": has_more,
            }

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel: ``cancelling`` (or unchanged if already); 409 if terminal."""
        with self._lock:
            self._catch_up()
            batch = self._get(batch_id)
            try:
                cancelled = advance(batch, Event.CANCEL, at=self._now())
            except InvalidTransition as exc:
                raise ApiError(409, "", body=exc.to_api_error()) from None
            if cancelled is not batch:
                self._put(cancelled, batch.status)
            return cancelled

    def run(self) -> None:
        """Bring every batch up to the clock's time (calls do this themselves)."""
        with self._lock:
            self._catch_up()

    # -- the worker --------------------------------------------------------------------

    def _get(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id) if isinstance(batch_id, str) else None
        if batch is None:
            raise ApiError(
                404, f"No batch found with id '{batch_id}'.", param="batch_id"
            )
        return batch

    def _put(self, batch: Batch, expected: BatchStatus) -> None:
        if not self.batches.put_if_status(batch, expected):  # pragma: no cover
            raise RuntimeError(f"batch {batch.id} changed under the emulator")

    def _catch_up(self) -> None:
        now = self._now()
        for batch_id in list(self._jobs):
            while batch_id in self._jobs and self._step(batch_id, now):
                pass

    def _due(self, batch: Batch, job: _Job) -> int:
        assert batch.expires_at is not None
        if batch.status is S.CANCELLING:
            assert batch.cancelling_at is not None
            return batch.cancelling_at + self.cancel_grace_seconds
        if batch.status is S.VALIDATING:
            due = batch.created_at + self.validation_seconds
        elif batch.status is S.IN_PROGRESS:
            assert batch.in_progress_at is not None
            due = batch.in_progress_at + (job.done + 1) * self.request_seconds
        else:
            assert batch.finalizing_at is not None
            due = batch.finalizing_at + self.finalizing_seconds
        return min(due, batch.expires_at)

    def _step(self, batch_id: str, now: int) -> bool:
        """Do the next piece of work of a batch if it is due; whether it was."""
        batch = self.batches.get(batch_id)
        job = self._jobs[batch_id]
        assert batch is not None
        at = self._due(batch, job)
        if at > now:
            return False
        status = batch.status
        assert batch.expires_at is not None
        if status is S.CANCELLING:
            after = self._end(batch, job, Event.MARK_CANCELLED, at, "batch_cancelled")
        elif at >= batch.expires_at:
            after = self._end(batch, job, Event.EXPIRE, at, "batch_expired")
        elif status is S.VALIDATING:
            after = self._validate(batch, job, at)
        elif status is S.IN_PROGRESS and job.done < len(job.requests):
            after = self._run_request(batch, job, at)
        elif status is S.IN_PROGRESS:
            after = advance(batch, Event.FINALIZE, at=at)
        else:
            after = self._end(batch, job, Event.COMPLETE, at, None)
        self._put(after, status)
        if after.status in TERMINAL_STATUSES:
            del self._jobs[batch_id]
        return True

    def _validate(self, batch: Batch, job: _Job, at: int) -> Batch:
        content = self.files.content(batch.input_file_id)
        if content is None:
            missing = BatchError(
                code="missing_input_file",
                message=f"Input file {batch.input_file_id} was not found.",
                param="input_file_id",
            )
            error = BatchErrors(data=(missing,))
            return advance(batch, Event.FAIL, at=at, errors=error)
        requests, errors = validate_input(content, batch.endpoint, self.models)
        if errors:
            return advance(
                batch, Event.FAIL, at=at, errors=BatchErrors(data=tuple(errors))
            )
        job.requests = requests
        return advance(
            batch,
            Event.START,
            at=at,
            model=requests[0].body.get("model"),
            request_counts=BatchRequestCounts(
                total=len(requests), completed=0, failed=0
            ),
        )

    def _line(
        self, custom_id: str, reply: Reply | None, error: tuple[str, str] | None
    ) -> str:
        response = None
        if reply is not None:
            response = {
                "status_code": reply.status_code,
                "request_id": self._id("req_", 32),
                "body": reply.body,
            }
        return json.dumps(
            {
                "id": self._id("batch_req_", 32),
                "custom_id": custom_id,
                "response": response,
                "error": None
                if error is None
                else {"code": error[0], "message": error[1]},
            },
            separators=(",", ":"),
        )

    def _run_request(self, batch: Batch, job: _Job, at: int) -> Batch:
        request = job.requests[job.done]
        try:
            reply = self.handler(batch.endpoint, request.body, request.custom_id, at)
        except Exception as exc:  # noqa: BLE001 - one request fails, not the server
            reply = _server_error(exc)
        job.done += 1
        job.input_tokens += reply.input_tokens
        job.output_tokens += reply.output_tokens
        line = self._line(request.custom_id, reply, None)
        (job.output if 200 <= reply.status_code < 300 else job.errors).append(line)
        return self._progress(batch, job)

    def _counts(self, batch: Batch, job: _Job) -> BatchRequestCounts:
        total = batch.request_counts.total if batch.request_counts else 0
        return BatchRequestCounts(
            total=total, completed=len(job.output), failed=len(job.errors)
        )

    def _usage(self, job: _Job) -> BatchUsage | None:
        if not job.done:
            return None
        return BatchUsage(
            input_tokens=job.input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=0),
            output_tokens=job.output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            total_tokens=job.input_tokens + job.output_tokens,
        )

    def _progress(self, before: Batch, job: _Job) -> Batch:
        # Work in progress is not a move: counts and usage grow, nothing else.
        after = attrs.evolve(
            before, request_counts=self._counts(before, job), usage=self._usage(job)
        )
        problems = _check(after) + check_step(before, after)
        assert not problems, problems
        return after

    def _end(
        self, batch: Batch, job: _Job, event: Event, at: int, unfinished: str | None
    ) -> Batch:
        if unfinished is not None and batch.status is not S.VALIDATING:
            message = {
                "batch_cancelled": "The batch was cancelled before this request ran.",
                "batch_expired": "The batch expired before this request ran.",
            }[unfinished]
            for request in job.requests[job.done :]:
                job.errors.append(
                    self._line(request.custom_id, None, (unfinished, message))
                )
            job.done = len(job.requests)
        if batch.status is S.VALIDATING:
            return advance(batch, event, at=at)
        changes: dict[str, Any] = {
            "request_counts": self._counts(batch, job),
            "usage": self._usage(job),
        }
        if job.output:
            changes["output_file_id"] = self._write(batch, job.output, "output", at)
        if job.errors:
            changes["error_file_id"] = self._write(batch, job.errors, "errors", at)
        return advance(batch, event, at=at, **changes)

    def _write(self, batch: Batch, lines: list[str], kind: str, at: int) -> str:
        expires_after = self._jobs[batch.id].output_expires_after
        content = ("\n".join(lines) + "\n").encode()
        file = self.files.add(
            FileObject(
                id=self._id("file-", 22),
                bytes=len(content),
                created_at=at,
                filename=f"{batch.id}_{kind}.jsonl",
                purpose="batch_output",
                expires_at=(
                    None if expires_after is None else batch.created_at + expires_after
                ),
            ),
            content,
        )
        return file.id
