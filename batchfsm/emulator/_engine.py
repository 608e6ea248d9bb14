"""The emulator: a deterministic Batch service in one object.

All state lives in the stores (:mod:`._stores`); the emulator is the worker.
Each unfinished batch has its next due time in the batch store's index, and
running due work (validation, one request per ``request_seconds``,
finalizing, the cancel grace, expiry) costs only what is due, never the
number of batches in flight. In-process, every call first runs the work due
by the clock's ``now``, so with a :class:`VirtualClock` and a seed the same
calls give byte-identical batches and files; after :meth:`Emulator.start`, a
background thread runs it instead and calls never wait for it.

Batches move only through :func:`batchfsm.advance`, each move (and each write
of progress) one conditional write on status and epoch, and each write moves
the epoch on, so a cancel racing the worker has exactly one winner: the loser
reads again (a cancel) or leaves it to the next run (the worker). One request's
failure (handler, serialization, recursion, memory) is that request's error
line; one batch's failure is logged and never reaches another batch or call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from .. import _json
from .._convert import to_dict
from .._errors import BatchFSMError, InvalidTransition
from .._lifecycle import advance, new_batch, progress
from .._model import (
    Batch,
    BatchError,
    BatchErrors,
    BatchRequestCounts,
    BatchStatus,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
from .._table import Event
from ._clock import Clock, VirtualClock
from ._files import expires_at, is_live, list_files_page, upload_problem
from ._handlers import Handler, Reply, default_handler
from ._params import (
    Problem,
    after_problem,
    batch_id_problem,
    create_problem,
    encodable,
    list_limit,
    list_page,
)
from ._pieces import dumps
from ._stores import (
    BatchStore,
    FileObject,
    FileStore,
    IdSource,
    MemoryBatchStore,
    MemoryIds,
    NewFile,
    ResultKind,
    Work,
)
from ._validate import (
    DEFAULT_MODELS,
    MAX_BYTES,
    file_too_large_error,
    is_blank,
    iter_lines,
    missing_file_error,
    scan_input,
)

__all__ = ["ApiError", "Emulator"]

S = BatchStatus
#: Bytes read from a stored file at a time.
READ_BYTES = 1 << 16
#: At most this many requests run in one write of a batch's progress.
REQUESTS_PER_WRITE = 256
#: ... and once their result lines reach this many bytes, they are written.
RESULT_BYTES_PER_WRITE = 8 << 20
#: ``GET /v1/batches``: ``limit`` is 1..100, and 20 by default.
MAX_BATCH_LIST_LIMIT = 100
BATCH_LIST_LIMIT = 20
#: A due time that never comes: a batch whose work keeps failing waits here.
NEVER = 2**62

log = logging.getLogger("batchfsm.emulator")


class _InputGoneError(Exception):
    """The input file was deleted while its batch still needed it."""


class ApiError(BatchFSMError):
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


def _refuse(problem: Problem) -> ApiError:
    return ApiError(
        problem.status, problem.message, param=problem.param, code=problem.code
    )


def _describe(exc: BaseException) -> str:
    try:
        return repr(exc)[:300]
    except Exception:  # noqa: BLE001 - a repr that fails still names its type
        return type(exc).__name__


def _server_error(exc: BaseException) -> Reply:
    return Reply(
        500,
        {
            "error": {
                "message": f"The model failed to answer: {_describe(exc)}",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    )


_UNFINISHED = {
    "batch_cancelled": "The batch was cancelled before this request ran.",
    "batch_expired": "The batch expired before this request ran.",
}


class Emulator:
    """A deterministic, in-process Batch service (files and batches).

    Args:
        clock: where time comes from (a :class:`VirtualClock` by default).
        handler: what answers each request.
        models: the models each endpoint accepts (by default every model id
            of the official client's types, dated snapshots included).
        extra_models: names every endpoint accepts too.
        any_model: accept every model name.
        store, files, ids: the stores (memory by default); ``files`` is
            ``store.files`` (a batch ends with its result files in one write).
        seed: reproducible ids (ignored when ``ids`` is given); random if None.

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
        extra_models: Iterable[str] = (),
        any_model: bool = False,
        store: BatchStore | None = None,
        files: FileStore | None = None,
        ids: IdSource | None = None,
        seed: int | None = None,
        validation_seconds: int = 1,
        request_seconds: int = 1,
        finalizing_seconds: int = 1,
        cancel_grace_seconds: int = 5,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        self.handler = handler
        extra = frozenset(extra_models)
        self.models = {endpoint: known | extra for endpoint, known in models.items()}
        self.any_model = any_model
        if store is None:
            store = MemoryBatchStore(files)
        elif files is not None and files is not store.files:
            # A batch ends with its result files in one write, to store.files.
            raise ValueError("files must be the batch store's own: store.files")
        self.batches: BatchStore = store
        self.files: FileStore = store.files
        self.ids: IdSource = ids if ids is not None else MemoryIds(seed)
        self.seed = seed
        self.validation_seconds = validation_seconds
        self.request_seconds = request_seconds
        self.finalizing_seconds = finalizing_seconds
        self.cancel_grace_seconds = cancel_grace_seconds
        self._running = threading.Lock()  # one runner of due work at a time
        self._inside = threading.local()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    # -- ids and time ----------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock.now())

    def _id(self, prefix: str, length: int = 32) -> str:
        return self.ids.new_id(prefix, length)

    # -- running due work -------------------------------------------------------------

    def run(self) -> None:
        """Run every piece of work due by the clock's time, here and now.

        In-process, calls do this themselves; after :meth:`start` the
        background worker does.
        """
        if getattr(self._inside, "run", False):
            return  # a handler calling the emulator: its own run is under way
        with self._running:
            self._inside.run = True
            try:
                now = self._now()
                while due := self.batches.due(now, 64):
                    for batch_id in due:
                        self._step_safely(batch_id, now)
            finally:
                self._inside.run = False

    def start(self, poll_seconds: float = 0.01) -> None:
        """Run due work in a background thread from now on; calls stop running it.

        Example:
            >>> emu = Emulator()
            >>> emu.start()
            >>> emu.stop()
        """
        if self._worker is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run()
                except Exception:  # pragma: no cover - run() isolates each batch
                    log.exception("the emulator's worker failed; carrying on")
                self._wake.wait(poll_seconds)
                self._wake.clear()

        self._worker = threading.Thread(
            target=loop, name="batchfsm-emulator-worker", daemon=True
        )
        self._worker.start()

    def stop(self) -> None:
        """Stop the background worker (if started) and wait for it."""
        worker, self._worker = self._worker, None
        if worker is not None:
            self._stop.set()
            self._wake.set()
            worker.join()

    def _sync(self) -> None:
        if self._worker is None:
            self.run()
        else:
            self._wake.set()

    # -- files -----------------------------------------------------------------------

    def create_file(
        self,
        content: bytes,
        filename: str,
        purpose: str,
        expires_after: int | None = None,
    ) -> FileObject:
        """Store an upload; returns its File object.

        A ``batch`` file must be ``.jsonl`` of at most 200 MB and expires 30 days
        after its creation unless ``expires_after`` (seconds) says otherwise;
        other purposes allow 512 MB and never expire by default.
        """
        problem = upload_problem(filename, purpose, len(content))
        if problem is not None:
            raise _refuse(problem)
        if not encodable(filename):
            filename = filename.encode("utf-8", "replace").decode("utf-8")
        now = self._now()
        file = FileObject(
            id=self._id("file-", 22),
            bytes=len(content),
            created_at=now,
            filename=filename,
            purpose=purpose,
            expires_at=expires_at(purpose, now, expires_after),
        )
        self.files.add(file, content)
        return file

    def list_files(
        self,
        *,
        after: str | None = None,
        limit: str | None = None,
        order: str | None = None,
        purpose: str | None = None,
    ) -> dict[str, Any]:
        """A page of the files not expired: the API's list object (as dicts).

        The parameters are ``GET /v1/files``'s query, as text: ``limit``
        1..10,000 (default 10,000), ``order`` ``desc`` (default) or ``asc``,
        ``after`` a file id, ``purpose`` a filter. A page costs what it lists,
        not the number of files.
        """
        page = list_files_page(
            self.files,
            self._now(),
            after=after,
            limit=limit,
            order=order,
            purpose=purpose,
        )
        if isinstance(page, Problem):
            raise _refuse(page)
        return page

    def retrieve_file(self, file_id: str) -> FileObject:
        """The File object; 404 if there is none or it expired."""
        file = self.files.get(file_id)
        if file is None or not is_live(file, self._now()):
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return file

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a file; 404 if there is none or it expired."""
        self.retrieve_file(file_id)
        content = self.files.content(file_id)
        if content is None:  # deleted since
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return content

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a file; the API's deletion answer (404 if none or expired)."""
        self.retrieve_file(file_id)
        if not self.files.delete(file_id):
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
        problem = create_problem(
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            output_expires_after=output_expires_after,
        )
        if problem is not None:
            raise _refuse(problem)
        self._sync()
        # The live API answers a create with usage zeroed (DESIGN §5, fact 15).
        batch = attrs.evolve(
            new_batch(
                id=self._id("batch_"),
                input_file_id=input_file_id,
                endpoint=endpoint,
                created_at=self._now(),
                metadata=metadata,
            ),
            usage=self._usage(Work(due_at=0)),
        )
        work = Work(
            due_at=self._due(batch, 0),
            output_expires_after=(
                output_expires_after["seconds"] if output_expires_after else None
            ),
        )
        self.batches.insert(batch, work)
        self._wake.set()
        return batch

    def retrieve_batch(self, batch_id: str) -> Batch:
        """The batch now; 404 if there is none."""
        self._sync()
        return self._get(batch_id)

    def list_batches(
        self, *, after: str | None = None, limit: int | str | None = None
    ) -> dict[str, Any]:
        """A page of batches, newest first: the API's list object (as dicts).

        ``limit`` is 1..100 (default 20), an int or ``GET /v1/batches``'s text.
        """
        size = list_limit(limit, MAX_BATCH_LIST_LIMIT, BATCH_LIST_LIMIT)
        if isinstance(size, Problem):
            raise _refuse(size)
        self._sync()
        if after is not None and (
            not isinstance(after, str) or self.batches.get(after) is None
        ):
            raise _refuse(after_problem("batch", after))
        page, has_more = self.batches.page(after, size)
        return list_page([to_dict(b) for b in page], has_more)

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel: ``cancelling`` (or unchanged if already); 409 if terminal."""
        self._sync()
        problem = batch_id_problem(batch_id)
        if problem is not None:
            raise _refuse(problem)
        while True:  # until the write wins, or the batch can no longer cancel
            batch, work = self._read(batch_id)
            if batch is None:
                raise ApiError(404, f"No batch found with id '{batch_id}'.")
            try:
                cancelled = advance(batch, Event.CANCEL, at=self._now())
            except InvalidTransition as exc:
                raise ApiError(409, "", body=exc.to_api_error()) from None
            if cancelled is batch:
                return batch
            if work is None:  # read as it was being added: read again
                continue
            assert cancelled.cancelling_at is not None
            moved = attrs.evolve(
                work, due_at=cancelled.cancelling_at + self.cancel_grace_seconds
            )
            if self.batches.write(
                cancelled, moved, status=batch.status, epoch=work.epoch
            ):
                self._wake.set()
                return cancelled

    # -- the worker --------------------------------------------------------------------

    def _read(self, batch_id: str) -> tuple[Batch | None, Work | None]:
        """The batch and its work as one snapshot, for a write naming the epoch.

        The work first: every write moves the epoch on, so a batch that
        changed after this read of the epoch makes that write stale (refused),
        never a write moved from an older batch than the epoch says. The work
        is read again after the batch: an epoch that moved in between means
        the two reads straddle another writer's write (another process's
        worker, say), and a move decided from them would mix its counts with
        older ones, so they are read again.
        """
        while True:
            work = self.batches.work(batch_id)
            batch = self.batches.get(batch_id)
            if work is None or batch is None:
                return batch, work
            again = self.batches.work(batch_id)
            if again is not None and again.epoch == work.epoch:
                return batch, work

    def _get(self, batch_id: str) -> Batch:
        problem = batch_id_problem(batch_id)
        if problem is not None:
            raise _refuse(problem)
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.")
        return batch

    def _due(self, batch: Batch, done: int) -> int:
        """When the next piece of work of ``batch`` is due, ``done`` requests run."""
        assert batch.expires_at is not None
        if batch.status is S.CANCELLING:
            assert batch.cancelling_at is not None
            return batch.cancelling_at + self.cancel_grace_seconds
        if batch.status is S.VALIDATING:
            due = batch.created_at + self.validation_seconds
        elif batch.status is S.IN_PROGRESS:
            assert batch.in_progress_at is not None
            due = batch.in_progress_at + (done + 1) * self.request_seconds
        else:
            assert batch.finalizing_at is not None
            due = batch.finalizing_at + self.finalizing_seconds
        return min(due, batch.expires_at)

    def _step_safely(self, batch_id: str, now: int) -> None:
        try:
            self._step(batch_id, now)
        except Exception:  # one batch's failure stays its own
            log.exception("batch %s: its work failed; it waits for expiry", batch_id)
            try:
                self._set_aside(batch_id)
            except Exception:  # pragma: no cover - the store itself fails
                log.exception("batch %s: could not be set aside", batch_id)

    def _set_aside(self, batch_id: str) -> None:
        # A batch whose work failed waits for its expiry, then for nothing: its
        # due time moves on, so the worker never loops on it.
        batch, work = self._read(batch_id)
        if batch is None or work is None:
            return
        assert batch.expires_at is not None
        due = batch.expires_at if work.due_at < batch.expires_at else NEVER
        self.batches.write(
            batch, attrs.evolve(work, due_at=due), status=batch.status, epoch=work.epoch
        )

    def _step(self, batch_id: str, now: int) -> None:
        """Do the work of a batch due by ``now`` (one move, or a run of requests)."""
        batch, work = self._read(batch_id)
        if batch is None or work is None or work.due_at > now:
            return  # it moved since the index was read
        at, status = work.due_at, batch.status
        assert batch.expires_at is not None
        if status is S.CANCELLING:
            self._end(batch, work, Event.MARK_CANCELLED, at, "batch_cancelled")
        elif at >= batch.expires_at:
            self._end(batch, work, Event.EXPIRE, at, "batch_expired")
        elif status is S.VALIDATING:
            self._validate(batch, work, at)
        elif status is S.IN_PROGRESS and work.done < self._total(batch):
            self._run_requests(batch, work, now)
        elif status is S.IN_PROGRESS:
            after = advance(batch, Event.FINALIZE, at=at)
            moved = attrs.evolve(work, due_at=self._due(after, work.done))
            self.batches.write(after, moved, status=status, epoch=work.epoch)
        else:
            self._end(batch, work, Event.COMPLETE, at, None)

    @staticmethod
    def _total(batch: Batch) -> int:
        return batch.request_counts.total if batch.request_counts else 0

    def _lines(self, file_id: str, offset: int) -> Iterator[tuple[int, bytes]]:
        def chunks() -> Iterator[bytes]:
            at = offset
            while True:
                data = self.files.read(file_id, at, READ_BYTES)
                if data is None:
                    raise _InputGoneError(file_id)
                if not data:
                    return
                at += len(data)
                yield data

        return iter_lines(chunks(), offset)

    def _validate(self, batch: Batch, work: Work, at: int) -> None:
        file = self.files.get(batch.input_file_id)
        if file is not None and not is_live(file, at):
            file = None  # expired before validation: as good as missing
        errors: list[BatchError] = []
        if file is not None and file.bytes > MAX_BYTES:
            errors = [file_too_large_error()]
        elif file is not None:
            try:
                outcome = scan_input(
                    self._lines(file.id, 0),
                    batch.endpoint,
                    None if self.any_model else self.models,
                )
            except _InputGoneError:
                file = None
            else:
                errors = outcome.errors
        if file is None:
            errors = [missing_file_error(batch.input_file_id)]
        if errors:
            failed = advance(
                batch, Event.FAIL, at=at, errors=BatchErrors(data=tuple(errors))
            )
            self.batches.write(failed, None, status=batch.status, epoch=work.epoch)
            return
        started = advance(
            batch,
            Event.START,
            at=at,
            model=outcome.model,
            request_counts=BatchRequestCounts(
                total=outcome.total, completed=0, failed=0
            ),
        )
        moved = attrs.evolve(work, due_at=self._due(started, 0))
        self.batches.write(started, moved, status=batch.status, epoch=work.epoch)

    def _line(
        self, custom_id: str | None, reply: Reply | None, error: tuple[str, str] | None
    ) -> str:
        response = None
        if reply is not None:
            response = {
                "status_code": reply.status_code,
                "request_id": self._id("req_", 32),
                "body": reply.body,
            }
        # In pieces: a big answer must not hold the GIL (and the server) long.
        # NaN is not JSON: such an answer fails its request.
        return dumps(
            {
                "id": self._id("batch_req_", 32),
                "custom_id": custom_id,
                "response": response,
                "error": None
                if error is None
                else {"code": error[0], "message": error[1]},
            }
        )

    def _answer(self, endpoint: str, raw: bytes, at: int) -> tuple[str, Reply]:
        """One request's result line and reply; never raises for the request's sake."""
        custom_id: str | None = None
        try:
            item = _json.decode(raw)
            custom_id, body = item["custom_id"], item["body"]
            reply = self.handler(endpoint, body, custom_id, at)
            if not isinstance(reply, Reply):
                raise TypeError(f"the handler answered {type(reply).__name__}")
            for tokens in (reply.input_tokens, reply.output_tokens):
                if type(tokens) is not int or tokens < 0:
                    raise TypeError(f"the handler counted {tokens!r} tokens")
        except Exception as exc:  # noqa: BLE001 - one request fails, not the batch
            reply = _server_error(exc)
        try:
            return self._line(custom_id, reply, None), reply
        except Exception as exc:  # noqa: BLE001 - e.g. nested too deep to write
            reply = _server_error(exc)
            return self._line(custom_id, reply, None), reply

    def _run_requests(self, batch: Batch, work: Work, now: int) -> None:
        assert batch.in_progress_at is not None
        assert batch.expires_at is not None
        total = self._total(batch)
        output: list[str] = []
        errors: list[str] = []
        done, offset, size = work.done, work.offset, 0
        completed, failed = work.completed, work.failed
        input_tokens, output_tokens = work.input_tokens, work.output_tokens
        try:
            for offset, raw in self._lines(batch.input_file_id, work.offset):  # noqa: B007
                if is_blank(raw):
                    continue
                at = batch.in_progress_at + (done + 1) * self.request_seconds
                line, reply = self._answer(batch.endpoint, raw, at)
                done += 1
                size += len(line)
                input_tokens += reply.input_tokens
                output_tokens += reply.output_tokens
                if 200 <= reply.status_code < 300:
                    completed += 1
                    output.append(line)
                else:
                    failed += 1
                    errors.append(line)
                following = at + self.request_seconds
                if (
                    done >= total
                    or len(output) + len(errors) >= REQUESTS_PER_WRITE
                    or size >= RESULT_BYTES_PER_WRITE
                    or following > now
                    or following >= batch.expires_at
                ):
                    break
        except _InputGoneError:
            # The input was deleted mid-run: what it held can no longer run.
            failed += total - done
            done = total
        moved = attrs.evolve(
            work,
            done=done,
            offset=offset,
            completed=completed,
            failed=failed,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        after = self._progress(batch, moved)
        moved = attrs.evolve(moved, due_at=self._due(after, done))
        self.batches.write(
            after,
            moved,
            status=batch.status,
            epoch=work.epoch,
            output=output,
            errors=errors,
        )

    @staticmethod
    def _counts(batch: Batch, work: Work) -> BatchRequestCounts:
        return BatchRequestCounts(
            total=Emulator._total(batch), completed=work.completed, failed=work.failed
        )

    @staticmethod
    def _usage(work: Work) -> BatchUsage:
        return BatchUsage(
            input_tokens=work.input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=0),
            output_tokens=work.output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            total_tokens=work.input_tokens + work.output_tokens,
        )

    def _progress(self, before: Batch, work: Work) -> Batch:
        # Work in progress is not a move: counts and usage grow, nothing else.
        return progress(
            before, request_counts=self._counts(before, work), usage=self._usage(work)
        )

    def _end(
        self, batch: Batch, work: Work, event: Event, at: int, unfinished: str | None
    ) -> None:
        if batch.status is S.VALIDATING:
            after = advance(batch, event, at=at)
            self.batches.write(after, None, status=batch.status, epoch=work.epoch)
            return
        late: list[bytes] = []
        done, failed = work.done, work.failed
        if unfinished is not None and done < self._total(batch):
            error = (unfinished, _UNFINISHED[unfinished])
            try:
                for _, raw in self._lines(batch.input_file_id, work.offset):
                    if is_blank(raw):
                        continue
                    try:
                        custom_id = _json.decode(raw)["custom_id"]
                    except Exception:  # noqa: BLE001 - nested too deep to read back
                        custom_id = None
                    late.append(self._line(custom_id, None, error).encode() + b"\n")
                    done, failed = done + 1, failed + 1
            except _InputGoneError:
                pass
            failed += self._total(batch) - done
            done = self._total(batch)
        ended = attrs.evolve(work, done=done, failed=failed)
        changes: dict[str, Any] = {
            "request_counts": self._counts(batch, ended),
            "usage": self._usage(ended),
        }
        files: list[NewFile] = []
        output = self.batches.results(batch.id, "output")
        if output:
            files.append(self._result_file(batch, work, output, "output", at))
            changes["output_file_id"] = files[-1][0].id
        errors = self.batches.results(batch.id, "errors")
        if late:
            errors = b"".join([errors, *late])
        if errors:
            files.append(self._result_file(batch, work, errors, "errors", at))
            changes["error_file_id"] = files[-1][0].id
        after = advance(batch, event, at=at, **changes)
        # The files go in the same conditional write: a lost race or a crash
        # never leaves a result file that no batch names.
        self.batches.write(
            after, None, status=batch.status, epoch=work.epoch, files=files
        )

    def _result_file(
        self, batch: Batch, work: Work, content: bytes, kind: ResultKind, at: int
    ) -> NewFile:
        expires_after = work.output_expires_after
        file = FileObject(
            id=self._id("file-", 22),
            bytes=len(content),
            created_at=at,
            filename=f"{batch.id}_{kind}.jsonl",
            purpose="batch_output",
            # Anchored at the output file's own creation, not the batch's.
            expires_at=expires_at("batch_output", at, expires_after),
        )
        return file, content
