"""The emulator: a deterministic Batch service in one object.

:class:`Emulator` is the in-process API: its calls are the Files and Batches
endpoints, each checked like the live API (a :class:`ApiError` otherwise).
All state lives in the stores (:mod:`._stores`); the work each batch has due
is done by the worker (:mod:`._worker`), run by the :class:`Runner`
(:mod:`._runner`): in-process, every call first runs the work due by the
clock's ``now``, so with a :class:`VirtualClock` and a seed the same calls
give byte-identical batches and files; after :meth:`Emulator.start`, a
background thread runs it instead and calls never wait for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

import attrs

from .._errors import InvalidTransition
from .._json_io import to_dict
from .._lifecycle import advance, new_batch
from .._model import TERMINAL_STATUSES, Batch
from .._table import Event
from ._api_error import ApiError, refuse
from ._catalogue import installed_models
from ._chunks import run_chunk
from ._clock import Clock, VirtualClock
from ._content import TooLargeError, Upload, measure, pieces, spool
from ._doubles import Doubles
from ._enqueued import token_limits
from ._events import Delivery, WebhookEvent
from ._files import (
    READ_PIECE_BYTES,
    FileGoneError,
    checked_content,
    expires_at,
    is_live,
    list_files_page,
    max_bytes,
    purge_expired,
    read_pieces,
    storage_full_problem,
    storage_problem,
    too_large_problem,
    upload_problem,
)
from ._handlers import AsyncHandler, Handler, default_handler, sized
from ._outage import Outage
from ._params import (
    Problem,
    after_problem,
    batch_id_problem,
    create_problem,
    encodable,
    list_limit,
    list_page,
)
from ._projects import DEFAULT_PROJECT
from ._results import usage
from ._runner import Runner
from ._store_errors import StoreUnavailable, WouldWait
from ._stores import (
    BatchStore,
    FileObject,
    FileStore,
    IdSource,
    MemoryBatchStore,
    MemoryIds,
    StorageFull,
    Work,
)
from ._webhooks import Outbox, WebhookEndpoint, Webhooks
from ._worker import PASS_SECONDS, due, run_due, snapshot

__all__ = ["INPUT_GRACE_REAL_SECONDS", "ApiError", "Emulator"]

#: Real seconds past its expiry that a batch's input file is still read.
INPUT_GRACE_REAL_SECONDS = 1.0

#: A store's read of one batch (``get``, or SQL stores' ``_get_now``).
_Read = Callable[..., Batch | None]

log = logging.getLogger("batchfsm.emulator")
#: The background worker purges expired files at most this often (real
#: seconds): see :meth:`Emulator._purge`.
PURGE_SECONDS = 1.0

#: ``GET /v1/batches``: ``limit`` is 1..100, and 20 by default.
MAX_BATCH_LIST_LIMIT = 100
BATCH_LIST_LIMIT = 20


def _bound(name: str, value: int | None) -> int | None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(
            f"{name} must be None or an integer of at least 1, got {value!r}"
        )
    return value


def _seconds(value: int | None, default: int) -> int:
    """A phase's emulated seconds: ``value``, or ``default`` when not given."""
    return default if value is None else value


def _spooled(content: Upload, purpose: str) -> tuple[IO[bytes], int]:
    """``content`` copied to a temporary file, and its size; 413 past its limit."""
    try:
        return spool(content, max_bytes(purpose))
    except TooLargeError as exc:
        problem = too_large_problem(exc.held, batch=purpose == "batch", more=True)
        raise refuse(problem) from None


class Emulator(Doubles):
    """A deterministic, in-process Batch service (files and batches).

    Args:
        clock: where time comes from (a :class:`VirtualClock` by default).
        handler: what answers each request: a synchronous :data:`Handler`
            (run one request after another), or an :data:`AsyncHandler`
            such as :func:`fake_handler` or an :class:`UpstreamHandler` (run
            up to ``concurrency`` requests of a batch at a time).
        concurrency: how many requests of one batch an async handler runs
            at once (default 64).
        models: the models each endpoint accepts (by default every model id
            of the official client's types, dated snapshots included: those
            of the ``openai`` client installed, read at run time, and never
            fewer than :data:`DEFAULT_MODELS`, the pinned list).
        extra_models: names every endpoint accepts too.
        any_model: accept every model name.
        store, files, ids: the stores (memory by default); ``files`` is
            ``store.files`` (a batch ends with its result files in one write).
        seed: reproducible ids (ignored when ``ids`` is given); random if None.
        enqueued_token_limit: the prompt tokens a model's enqueued batches may
            hold at once (None: no limit): one for every model, or per model
            name (``"*"``: every other model). A batch that would pass it
            fails validation with ``token_limit_exceeded``, as the live API's
            does; its tokens are estimated as the default handler counts
            ``usage.input_tokens``, held from ``in_progress`` until it ends.
        max_storage_bytes: the bytes each project's stored files may hold
            together (None: no limit); an upload that would pass it is refused with
            413 ``storage_limit_exceeded``, however many uploads race (the
            store's check is atomic with its write). Result files count
            toward it but are never refused by it (``max_output_bytes``
            bounds them).
        max_output_bytes: the bytes of result lines one batch may store (None:
            no limit). A request whose result line would pass it, and every
            request of the batch after it, fails with the error line
            ``batch_output_limit_exceeded`` (its answer is not stored; those
            after it do not run); the batch goes on and ends as usual.
        validation_seconds, request_seconds, finalizing_seconds: the emulated
            seconds validation, each request and finalizing take (1 each by
            default; 0 in the fast lane).
        cancel_grace_seconds: how long a batch stays ``cancelling`` (5 by
            default; 0 in the fast lane).
        finish_on_retrieve: the fast lane, for test suites: the phases take
            no emulated time (unless given), a create runs its batch's work
            before it answers (the answer is the batch as created,
            ``validating``) and a retrieve of a batch not yet finished runs
            the work due first, even with :meth:`start`'s worker (which then
            looks for work every 0.5 s, not 0.01 s): the first retrieve after
            a create answers the batch finished. The lifecycle is the same:
            it passes ``in_progress`` and ``finalizing`` with every stamp
            written (all at its creation's second), its trace legal for
            :func:`batchfsm.check_trace`. ``serve --finish-on-retrieve``.
        webhooks: deliver each batch's event when it ends (``batch.completed``
            and the like) to these endpoints, signed (a :class:`Webhooks`, or
            its endpoints): to those of the batch's project
            (:attr:`WebhookEndpoint.project`) and those bound to none.
            In-process they are delivered when due work runs
            (by the clock: a virtual clock delivers when it moves); after
            :meth:`start`, by a thread of their own. Every store keeps the
            events (:meth:`webhook_events`) whether or not they are delivered.
        embedding_dimensions: the dimensions of the default handler's
            embeddings when the request names none (None: the model's own
            size, 1,536 or 3,072, as the live API answers; N: N, or the
            model's size if smaller), for tests that want short vectors. A
            request's ``dimensions`` is honoured either way; a handler of
            your own is not sized (``ValueError``).

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

        The fast lane: the first retrieve answers it finished, no clock moved.

        >>> fast = Emulator(finish_on_retrieve=True)
        >>> upload = fast.create_file(line.encode(), "in.jsonl", "batch")
        >>> batch = fast.create_batch(
        ...     input_file_id=upload.id, endpoint="/v1/embeddings")
        >>> batch.status.value, fast.retrieve_batch(batch.id).status.value
        ('validating', 'completed')
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        handler: Handler | AsyncHandler = default_handler,
        concurrency: int = 64,
        models: Mapping[str, frozenset[str]] | None = None,
        extra_models: Iterable[str] = (),
        any_model: bool = False,
        store: BatchStore | None = None,
        files: FileStore | None = None,
        ids: IdSource | None = None,
        seed: int | None = None,
        enqueued_token_limit: int | Mapping[str, int] | None = None,
        validation_seconds: int | None = None,
        request_seconds: int | None = None,
        finalizing_seconds: int | None = None,
        cancel_grace_seconds: int | None = None,
        max_storage_bytes: int | None = None,
        max_output_bytes: int | None = None,
        webhooks: Webhooks | Iterable[WebhookEndpoint] | None = None,
        embedding_dimensions: int | None = None,
        finish_on_retrieve: bool = False,
    ) -> None:
        self.clock = clock if clock is not None else VirtualClock()
        #: Those of an embedding whose request names none (None: the model's).
        self.embedding_dimensions = _bound("embedding_dimensions", embedding_dimensions)
        self.handler = sized(handler, self.embedding_dimensions)
        self.concurrency = _bound("concurrency", concurrency) or 64
        extra = frozenset(extra_models)
        if models is None:
            models = installed_models()
        self.models = {endpoint: known | extra for endpoint, known in models.items()}
        self.any_model = any_model
        #: The limit of each model's enqueued tokens ("*": every other model).
        self.enqueued_token_limits = token_limits(enqueued_token_limit)
        if store is None:
            store = MemoryBatchStore(files)
        elif files is not None and files is not store.files:
            # A batch ends with its result files in one write, to store.files.
            raise ValueError("files must be the batch store's own: store.files")
        self.batches: BatchStore = store
        self.files: FileStore = store.files
        self.ids: IdSource = ids if ids is not None else MemoryIds(seed)
        self.seed = seed
        #: The fast lane: a retrieve runs the work due first, even with a
        #: background worker, and the phases take no time unless told to.
        self.finish_on_retrieve = bool(finish_on_retrieve)
        self._phases(
            validation_seconds,
            request_seconds,
            finalizing_seconds,
            cancel_grace_seconds,
        )
        #: The store's outages, as the worker and the HTTP app meet them.
        self.outage = Outage()
        self.max_storage_bytes = _bound("max_storage_bytes", max_storage_bytes)
        self.max_output_bytes = _bound("max_output_bytes", max_output_bytes)
        self._runner = Runner(self._run_due)
        self.webhooks: Webhooks | None = self._webhooks(webhooks)

    def _webhooks(
        self, webhooks: Webhooks | Iterable[WebhookEndpoint] | None
    ) -> Webhooks | None:
        """The webhooks to deliver to, their endpoints added to the outbox."""
        if webhooks is None:
            return None
        if not isinstance(webhooks, Webhooks):
            webhooks = Webhooks(webhooks)
        for endpoint in webhooks.endpoints:
            self.outbox.add_webhook_endpoint(endpoint.url, endpoint.project)
        return webhooks

    def _phases(
        self,
        validation: int | None,
        request: int | None,
        finalizing: int | None,
        cancel_grace: int | None,
    ) -> None:
        """Each phase's emulated seconds: as given, else 1 (5 for the grace) or 0."""
        fast = self.finish_on_retrieve
        self.validation_seconds = _seconds(validation, 0 if fast else 1)
        self.request_seconds = _seconds(request, 0 if fast else 1)
        self.finalizing_seconds = _seconds(finalizing, 0 if fast else 1)
        self.cancel_grace_seconds = _seconds(cancel_grace, 0 if fast else 5)

    def add_webhook(self, endpoint: WebhookEndpoint) -> None:
        """Deliver the events of the batches that end from now on to ``endpoint`` too.

        Those of its project's batches only, if it names one.

        Example:
            >>> emu = Emulator()
            >>> hook = WebhookEndpoint("http://127.0.0.1:9/", "whsec_c2VjcmV0")
            >>> emu.add_webhook(hook)
            >>> [e.url for e in emu.webhooks.endpoints]
            ['http://127.0.0.1:9/']
        """
        if self.webhooks is None:
            self.webhooks = Webhooks(())
        self.webhooks.add(endpoint)
        self.outbox.add_webhook_endpoint(endpoint.url, endpoint.project)

    @property
    def outbox(self) -> Outbox:
        """The store's outbox: batch events, their deliveries and attempts."""
        outbox: Outbox | None = getattr(self.batches, "outbox", None)
        if outbox is None:
            raise TypeError(
                f"{type(self.batches).__name__} keeps no outbox of batch events"
            )
        return outbox

    def webhook_events(self) -> list[WebhookEvent]:
        """Every batch event written so far, in order (see :class:`Webhooks`).

        Example:
            >>> emu = Emulator()
            >>> f = emu.create_file(b"{oops", "in.jsonl", "batch")
            >>> b = emu.create_batch(input_file_id=f.id, endpoint="/v1/embeddings")
            >>> emu.clock.advance(5)
            >>> [(e.type, e.batch_id == b.id) for e in emu.webhook_events()]
            [('batch.failed', True)]
        """
        self._runner.sync()
        events: list[WebhookEvent] = []
        while page := self.outbox.events(events[-1].id if events else None, 1000):
            events += page
        return events

    def webhook_deliveries(self, event_id: str | None = None) -> list[Delivery]:
        """Each event's delivery to each endpoint, with its attempts.

        Each :class:`Attempt` says when, the HTTP status and the error.

        Example:
            >>> Emulator().webhook_deliveries()
            []
        """
        return self.outbox.deliveries(event_id)

    # -- ids and time ----------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock.now())

    @property
    def input_grace_seconds(self) -> int:
        """How long past its expiry the worker still reads a batch's input file.

        The emulated seconds of :data:`INPUT_GRACE_REAL_SECONDS` of real time
        on a clock that runs at a ``speed`` (none on a virtual clock): at
        ``--speed 1e8`` a file lives 26 ms of real time, less than a
        client's upload and create take over HTTP; its batch still reads it.
        Over the API the file expires on time.
        """
        speed = getattr(self.clock, "speed", None)
        return 0 if speed is None else int(speed * INPUT_GRACE_REAL_SECONDS)

    def _id(self, prefix: str, length: int = 32) -> str:
        return self.ids.new_id(prefix, length)

    # -- running due work -------------------------------------------------------------

    def _run_due(self) -> bool:
        try:
            more = self._run_due_once()
        except StoreUnavailable as exc:
            self.outage.failed(exc, retried=True)  # the runner tries again
            raise
        self.outage.ok()
        return more

    def _run_due_once(self) -> bool:
        """One pass over the work due (at most about :data:`PASS_SECONDS`).

        Whether it ended at that bound: then work may be due still, and the
        runner runs another pass (reading the clock again).
        """
        now = self._now()
        deadline = time.monotonic() + PASS_SECONDS
        more = run_due(self, now, deadline)
        # Big batches' chunks, whoever holds them: one a pass at least, so
        # that they go on while other due work fills every pass.
        while run_chunk(self, now, deadline):
            more = run_due(self, now, deadline) or time.monotonic() >= deadline
            if more:
                break
        uploads = self.__dict__.get("_uploads")  # made on first use of the API
        if uploads is not None:
            uploads.sweep(now)  # expired uploads' parts: their files closed
        hooks = self.webhooks
        if hooks is not None:
            if hooks.started:
                hooks.wake()  # its thread delivers, by real time
            else:
                hooks.deliver_due(self.outbox, self.clock.now())
        self._purge(now)
        return more

    #: When the background worker purges expired files next (see :meth:`_purge`).
    _purge_after = 0.0

    def _purge(self, now: int) -> None:
        """Purge the files expired by ``now`` (in the background: once a second).

        An expired file reads as gone whether purged or not (its purge frees
        its space): the background worker purges at most once every
        :data:`PURGE_SECONDS`, not at each of its passes, which come as
        often as batches are created.
        """
        if self._runner.started:
            if time.monotonic() < self._purge_after:
                return
            self._purge_after = time.monotonic() + PURGE_SECONDS
        # No file expired after the earliest work due is purged: a batch
        # behind (another process's, say) still reads its input for the
        # requests due before the input expired.
        try:
            earliest = self.batches.earliest_due()
            if earliest is not None:
                now = min(now, earliest)
            purge_expired(self.files, now - self.input_grace_seconds)
        except StoreUnavailable:
            raise
        except Exception:  # the next run purges them: no call fails for it
            log.exception("purging expired files failed; the next run tries again")

    def run(self) -> None:
        """Run every piece of work due by the clock's time, here and now.

        In-process, calls do this themselves; after :meth:`start` the
        background worker does.
        """
        self._runner.run()

    def start(self, poll_seconds: float | None = None) -> None:
        """Run due work in a background thread from now on; calls stop running it.

        The thread looks for due work every ``poll_seconds`` (0.01 s; 0.5 s
        in the fast lane, whose calls run their batches' work themselves).

        Example:
            >>> emu = Emulator()
            >>> emu.start()
            >>> emu.stop()
        """
        if poll_seconds is None:
            poll_seconds = 0.5 if self.finish_on_retrieve else 0.01
        self._runner.start(poll_seconds)
        if self.webhooks is not None:
            self.webhooks.start(self.outbox)

    def stop(self) -> None:
        """Stop the background worker (if started) and wait for it."""
        self._runner.stop()
        if self.webhooks is not None:
            self.webhooks.stop()

    # -- files -----------------------------------------------------------------------

    def create_file(
        self,
        content: Upload,
        filename: str,
        purpose: str,
        expires_after: int | None = None,
        *,
        project: str = DEFAULT_PROJECT,
    ) -> FileObject:
        r"""Store an upload in ``project``; returns its File object.

        ``content`` is the bytes, a binary file open for reading (read from
        where it stands to its end), or an iterable of pieces of bytes; it
        goes to the store a piece at a time. A ``batch`` file must be named
        ``.jsonl`` (or without an extension), be UTF-8 (checked as it goes
        in) and at most 200 MB, and expires 30 days after its creation unless
        ``expires_after`` (seconds) says otherwise; other purposes allow 512
        MB and never expire by default. Every limit is checked before the
        store sees a byte: content whose size cannot be known beforehand (an
        iterable, a pipe) is first copied to a temporary file, refused as soon
        as it passes its limit. With ``max_storage_bytes``, a file that would
        bring the project's stored files past it is refused (413,
        ``storage_limit_exceeded``): the store judges it atomically as it
        counts the file in, so uploads racing one another never bring the
        project past the limit together. If reading
        ``content`` fails midway, the error propagates and nothing is stored.

        Example:
            >>> import io
            >>> emu = Emulator()
            >>> emu.create_file(io.BytesIO(b"{}\n"), "in.jsonl", "batch").bytes
            3
            >>> emu.create_file(iter([b"{}", b"\n"]), "in.jsonl", "batch").bytes
            3
        """
        size = measure(content)
        problem = upload_problem(filename, purpose, size or 0)
        if problem is not None:
            raise refuse(problem)
        copy = None
        try:
            if size is None:  # known only once read: read it, within its limit
                copy, size = _spooled(content, purpose)
                content = copy
            return self._store_file(
                content, size, filename, purpose, expires_after, project
            )
        finally:
            if copy is not None:
                copy.close()

    def _store_file(
        self,
        content: Upload,
        size: int,
        filename: str,
        purpose: str,
        expires_after: int | None,
        project: str,
    ) -> FileObject:
        """Store ``content`` of ``size`` bytes, if the project's storage allows."""
        if not encodable(filename):
            filename = filename.encode("utf-8", "replace").decode("utf-8")
        limit = self.max_storage_bytes
        if limit is not None:  # early, before any byte is written: a hint only
            problem = storage_problem(
                size, self.files.stored_bytes(project=project), limit
            )
            if problem is not None:
                raise refuse(problem)
        now = self._now()
        file = FileObject(
            id=self._id("file-", 22),
            bytes=size,
            created_at=now,
            filename=filename,
            purpose=purpose,
            expires_at=expires_at(purpose, now, expires_after),
        )
        # Bytes as they are (a memory store keeps them, uncopied); a file
        # or an iterable a piece at a time, a batch file's checked as UTF-8
        # on its way in (refused midway, the store keeps nothing of it).
        checked = checked_content(
            purpose, content if isinstance(content, bytes) else pieces(content)
        )
        if limit is None:
            self.files.add(file, checked, project=project)
            return file
        try:  # the store's check decides, atomic with the write (uploads race)
            self.files.add(file, checked, project=project, max_stored=limit)
        except StorageFull as full:
            raise refuse(storage_full_problem(full)) from None
        return file

    def list_files(
        self,
        *,
        after: str | None = None,
        limit: str | None = None,
        order: str | None = None,
        purpose: str | None = None,
        project: str = DEFAULT_PROJECT,
    ) -> dict[str, Any]:
        """A page of ``project``'s files not expired: the API's list object.

        The parameters are ``GET /v1/files``'s query, as text: ``limit``
        1..10,000 (default 10,000), ``order`` ``desc`` (default) or ``asc``,
        ``after`` a file id, ``purpose`` a filter. A page costs what it lists,
        not the number of files.
        """
        self._runner.sync()  # expired files are purged with the due work
        page = list_files_page(
            self.files,
            self._now(),
            after=after,
            limit=limit,
            order=order,
            purpose=purpose,
            project=project,
        )
        if isinstance(page, Problem):
            raise refuse(page)
        return page

    def retrieve_file(
        self, file_id: str, *, project: str = DEFAULT_PROJECT
    ) -> FileObject:
        """The File object; 404 if there is none, it expired or is another project's."""
        file = self.files.get(file_id, project=project)
        if file is None or not is_live(file, self._now()):
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return file

    def file_content(self, file_id: str, *, project: str = DEFAULT_PROJECT) -> bytes:
        """The bytes of a file; 404 if there is none or it expired."""
        self.retrieve_file(file_id, project=project)
        content = self.files.content(file_id)
        if content is None:  # deleted since
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return content

    def file_content_pieces(
        self,
        file_id: str,
        piece_bytes: int = READ_PIECE_BYTES,
        *,
        project: str = DEFAULT_PROJECT,
    ) -> Iterator[bytes]:
        r"""The bytes of a file in pieces of at most ``piece_bytes``, read as asked for.

        The file is found (404 if there is none or it expired) when this is
        called; each piece is then read from the store by range as the
        iterator is advanced, so a file of any size is never held whole.

        Raises:
            ApiError: 404 now if there is no such file; 404 while iterating if
                it is deleted midway.

        Example:
            >>> emu = Emulator()
            >>> f = emu.create_file(b'{"a": 1}\n' * 3, "in.jsonl", "batch")
            >>> [len(piece) for piece in emu.file_content_pieces(f.id, 10)]
            [10, 10, 7]
        """
        if type(piece_bytes) is not int or piece_bytes < 1:
            raise TypeError(
                f"piece_bytes must be an integer of at least 1, got {piece_bytes!r}"
            )
        file = self.retrieve_file(file_id, project=project)
        return self._pieces(file, piece_bytes)

    def _pieces(self, file: FileObject, piece_bytes: int) -> Iterator[bytes]:
        try:
            yield from read_pieces(self.files, file, piece_bytes)
        except FileGoneError:
            raise ApiError(404, f"No such File object: {file.id}", param="id") from None

    def delete_file(
        self, file_id: str, *, project: str = DEFAULT_PROJECT
    ) -> dict[str, Any]:
        """Delete a file; the API's deletion answer (404 if none or expired)."""
        self.retrieve_file(file_id, project=project)
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
        project: str = DEFAULT_PROJECT,
    ) -> Batch:
        """Create a batch in ``project``; 400 with ``param`` naming a bad parameter.

        Problems with the input file are not create errors: the batch is
        created and fails validation (as the live API does); so does an input
        file of another project, as a missing one.
        """
        problem = create_problem(
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            output_expires_after=output_expires_after,
        )
        if problem is not None:
            raise refuse(problem)
        self._runner.sync()
        # The live API answers a create with usage zeroed (observed).
        batch = attrs.evolve(
            new_batch(
                id=self._id("batch_"),
                input_file_id=input_file_id,
                endpoint=endpoint,
                created_at=self._now(),
                metadata=metadata,
            ),
            usage=usage(Work(due_at=0)),
        )
        work = Work(
            due_at=due(self, batch, 0),
            output_expires_after=(
                output_expires_after["seconds"] if output_expires_after else None
            ),
        )
        self.batches.insert(batch, work, project=project)
        if self.finish_on_retrieve:
            # The fast lane runs its work now, in the caller: no thread to
            # hand it to and wait for. The answer is the batch as created.
            self._runner.run()
        else:
            self._runner.wake()
        return batch

    def retrieve_batch(self, batch_id: str, *, project: str = DEFAULT_PROJECT) -> Batch:
        """The batch now; 404 if there is none (in ``project``).

        In the fast lane (``finish_on_retrieve``) the work due runs first,
        here, even when a background worker runs it otherwise: a batch is
        answered finished by the first retrieve after its creation.
        """
        if self.finish_on_retrieve and self._runner.started:
            found = self._get(batch_id, project)
            if found.status in TERMINAL_STATUSES:
                return found  # the usual case: its create ran its work
            self._runner.run()  # waits for a run under way, then runs the rest
        else:
            self._runner.sync()
        return self._get(batch_id, project)

    def _retrieve_batch_now(
        self, batch_id: str, *, project: str = DEFAULT_PROJECT
    ) -> Batch:
        """:meth:`retrieve_batch` without waiting, for the event loop.

        Raises ``WouldWait`` (nothing done) unless a background thread runs
        the due work and the store can read without waiting (SQLite's WAL):
        then :meth:`retrieve_batch`, in a store thread, is the way.
        """
        read = getattr(self.batches, "_get_now", None)
        if read is None or not self._runner.started:
            raise WouldWait
        return self._get(batch_id, project, read)

    def list_batches(
        self,
        *,
        after: str | None = None,
        limit: int | str | None = None,
        project: str = DEFAULT_PROJECT,
    ) -> dict[str, Any]:
        """A page of ``project``'s batches, newest first: the API's list object.

        ``limit`` is 1..100 (default 20), an int or ``GET /v1/batches``'s text.
        """
        size = list_limit(limit, MAX_BATCH_LIST_LIMIT, BATCH_LIST_LIMIT)
        if isinstance(size, Problem):
            raise refuse(size)
        self._runner.sync()
        if after is not None and (
            not isinstance(after, str)
            or self.batches.get(after, project=project) is None
        ):
            raise refuse(after_problem("batch", after))
        page, has_more = self.batches.page(after, size, project=project)
        return list_page([to_dict(b) for b in page], has_more)

    def cancel_batch(self, batch_id: str, *, project: str = DEFAULT_PROJECT) -> Batch:
        """Cancel: ``cancelling`` (or unchanged if already); 409 if terminal.

        404 if there is no such batch in ``project``.
        """
        self._runner.sync()
        problem = batch_id_problem(batch_id)
        if problem is not None:
            raise refuse(problem)
        while True:  # until the write wins, or the batch can no longer cancel
            batch, work = snapshot(self.batches, batch_id, project)
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
                self._runner.wake()
                return cancelled

    def _get(self, batch_id: str, project: str, read: _Read | None = None) -> Batch:
        problem = batch_id_problem(batch_id)
        if problem is not None:
            raise refuse(problem)
        batch = (read or self.batches.get)(batch_id, project=project)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.")
        return batch
