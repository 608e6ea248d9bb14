"""Projects never see each other: a stateful property test, on every store.

Two API keys, each in its own project, make random calls over HTTP (upload,
create, retrieve, list, cancel, content, delete, the Uploads API's create,
add part, complete and cancel, and time passing) on one emulator. Whatever
they do, a key never learns the other project's objects:

- every answer to one key names none of the ids the other project holds
  (but the id it asked about itself);
- asking about another project's id answers exactly as asking about an
  unknown id of the same shape (status, body, headers but the request id);
- each key's listings hold exactly its own files (its uploads and its
  batches' result files) and its own batches: no count of the other's shows;
- each project's webhook endpoint (a real receiver the test starts, one path
  per project) is delivered exactly the events of its own ended batches,
  signed: never one of the other project's.

The store is shared by every example (memory, SQLite, a real PostgreSQL);
each example's keys have projects of their own, so the objects of the
examples before are there too, in other projects, and must stay unseen.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from batchfsm.emulator import (
    Emulator,
    EmulatorTransport,
    MemoryBatchStore,
    SQLiteStore,
    SQLStore,
    VirtualClock,
    WebhookEndpoint,
    create_app,
    make_input_file,
    open_store,
)
from batchfsm.emulator._receiver import WebhookReceiver
from batchfsm.emulator._uploads import uploads_of

from .receivers import new_secret, verified

CHAT = "/v1/chat/completions"
WHO = st.sampled_from(["a", "b"])
#: The statuses of a batch that read its input file.
_READ_INPUT = {"in_progress", "finalizing", "completed"}
#: The headers an answer may differ by whatever it answers.
_PER_REQUEST = {"x-request-id", "date"}
_ENDED = {"completed", "failed", "expired", "cancelled"}
#: One request line: an upload's one part.
_LINE = make_input_file(1)


def _other(who: str) -> str:
    return "b" if who == "a" else "a"


def _unknown_like(object_id: str) -> str:
    """An id of no object, of the same shape (prefix and length) as ``object_id``."""
    prefix = object_id[: object_id.index("-" if "-" in object_id else "_") + 1]
    digits = len(object_id) - len(prefix)
    return prefix + secrets.token_hex(digits)[:digits]


class Projects(RuleBasedStateMachine):
    """Two keys in two projects on one emulator, their objects as each knows them."""

    #: Each example's emulator: each test's own, shared by its examples.
    make_emulator: Callable[[], Emulator]
    #: The test's webhook receiver (None: webhooks not judged).
    receiver: WebhookReceiver | None = None

    files = Bundle("files")
    batches = Bundle("batches")

    def __init__(self) -> None:
        super().__init__()
        self.emulator = self.make_emulator()
        run = uuid.uuid4().hex[:12]
        keys = {f"sk-{who}-{run}": f"proj_{who}_{run}" for who in "ab"}
        self.headers = {
            key.split("-")[1]: {"Authorization": f"Bearer {key}"} for key in keys
        }
        self.transport = EmulatorTransport(create_app(self.emulator, api_keys=keys))
        self.hook_paths: dict[str, str] = {}
        if self.receiver is not None:
            for who, project in zip("ab", keys.values(), strict=True):
                url = f"{self.receiver.url}/{project}"
                self.hook_paths[who] = url.split("/", 3)[3]
                self.emulator.add_webhook(
                    WebhookEndpoint(url, self.receiver.secret or "", project)
                )
        self.http = httpx2.Client(transport=self.transport, base_url="http://e/v1")
        # What each key made and still has, and every id it was ever shown.
        self.live_files: dict[str, set[str]] = {"a": set(), "b": set()}
        self.made_batches: dict[str, set[str]] = {"a": set(), "b": set()}
        self.known: dict[str, set[str]] = {"a": set(), "b": set()}
        # Ids of the other's a key named itself (a batch's input file): its
        # own batch may show them back.
        self.named: dict[str, set[str]] = {"a": set(), "b": set()}
        # Batches of another project's file: they never read it.
        self.foreign_input: set[str] = set()
        # Each upload's parts (ids), as its owner added them.
        self.parts: dict[str, list[str]] = {}

    def teardown(self) -> None:
        self.http.close()
        self.transport.close()
        uploads_of(self.emulator).clear()  # parts still held: temporary files

    # -- calls, each judged for leaks --------------------------------------------------

    def call(
        self, who: str, method: str, path: str, asked: str | None = None, **kw: Any
    ) -> httpx2.Response:
        """``who``'s request; fails if its answer names an id of the other's."""
        answer = self.http.request(method, path, headers=self.headers[who], **kw)
        assert answer.status_code < 500, answer.text
        text = answer.text
        if asked is not None:
            text = text.replace(asked, "")
        leaked = [i for i in self.known[_other(who)] - self.named[who] if i in text]
        assert not leaked, f"{who} was shown {leaked} of the other project"
        return answer

    def as_unknown(
        self, who: str, method: str, path: str, foreign: str, **kw: Any
    ) -> None:
        """Asking about ``foreign`` answers exactly as about an unknown id."""
        unknown = _unknown_like(foreign)
        got = self.call(who, method, path.format(foreign), asked=foreign, **kw)
        want = self.call(who, method, path.format(unknown), asked=unknown, **kw)
        assert got.status_code == want.status_code
        assert got.status_code in (400, 404), got.text
        assert got.text.replace(foreign, "ID") == want.text.replace(unknown, "ID")
        heads = [
            {k: v for k, v in r.headers.items() if k not in _PER_REQUEST}
            for r in (got, want)
        ]
        assert heads[0] == heads[1]

    def learn(self, who: str, ids: Iterator[str | None]) -> None:
        self.known[who].update(i for i in ids if i is not None)

    # -- rules -------------------------------------------------------------------------

    @rule(target=files, who=WHO, requests=st.integers(1, 3))
    def upload(self, who: str, requests: int) -> tuple[str, str]:
        answer = self.call(
            who,
            "POST",
            "/files",
            files={"file": ("in.jsonl", make_input_file(requests))},
            data={"purpose": "batch"},
        )
        assert answer.status_code == 200, answer.text
        file_id = answer.json()["id"]
        self.live_files[who].add(file_id)
        self.learn(who, iter([file_id]))
        return who, file_id

    @rule(target=batches, who=WHO, file=files)
    def create(self, who: str, file: tuple[str, str]) -> tuple[str, str]:
        # Another project's file makes a batch that fails validation, as an
        # unknown file does: no create error tells the two apart.
        body = {"input_file_id": file[1], "endpoint": CHAT, "completion_window": "24h"}
        self.named[who].add(file[1])
        answer = self.call(who, "POST", "/batches", asked=file[1], json=body)
        assert answer.status_code == 200, answer.text
        batch_id = answer.json()["id"]
        self.made_batches[who].add(batch_id)
        if file[0] != who:
            self.foreign_input.add(batch_id)
        self.learn(who, iter([batch_id]))
        return who, batch_id

    @rule(who=WHO, file=files)
    def retrieve_file(self, who: str, file: tuple[str, str]) -> None:
        self._file_call(who, file, "GET", "/files/{}")

    @rule(who=WHO, file=files)
    def content(self, who: str, file: tuple[str, str]) -> None:
        self._file_call(who, file, "GET", "/files/{}/content")

    @rule(who=WHO, file=consumes(files))
    def delete(self, who: str, file: tuple[str, str]) -> None:
        if self._file_call(who, file, "DELETE", "/files/{}"):
            self.live_files[who].discard(file[1])

    def _file_call(
        self, who: str, file: tuple[str, str], method: str, path: str
    ) -> bool:
        owner, file_id = file
        if owner != who or file_id not in self.live_files[who]:
            self.as_unknown(who, method, path, file_id)
            return False
        answer = self.call(who, method, path.format(file_id))
        assert answer.status_code == 200, answer.text
        return True

    @rule(who=WHO, batch=batches)
    def retrieve_batch(self, who: str, batch: tuple[str, str]) -> None:
        self._batch_call(who, batch, "GET", "/batches/{}", (200,))

    @rule(who=WHO, batch=batches)
    def cancel(self, who: str, batch: tuple[str, str]) -> None:
        self._batch_call(who, batch, "POST", "/batches/{}/cancel", (200, 409))

    def _batch_call(
        self, who: str, batch: tuple[str, str], method: str, path: str, ok: Any
    ) -> None:
        owner, batch_id = batch
        if owner != who:
            self.as_unknown(who, method, path, batch_id)
            return
        answer = self.call(who, method, path.format(batch_id))
        assert answer.status_code in ok, answer.text

    @rule(who=WHO, batch=batches)
    def list_batches_after(self, who: str, batch: tuple[str, str]) -> None:
        if batch[0] != who:
            self.as_unknown(who, "GET", "/batches?after={}", batch[1])

    @rule(who=WHO, file=files)
    def list_files_after(self, who: str, file: tuple[str, str]) -> None:
        if file[0] != who:
            self.as_unknown(who, "GET", "/files?after={}", file[1])

    @rule(seconds=st.sampled_from([1, 5, 30, 120]))
    def time_passes(self, seconds: int) -> None:
        self.emulator.clock.advance(seconds)  # type: ignore[attr-defined]

    # -- what each key lists -----------------------------------------------------------

    @rule(who=WHO, limit=st.integers(1, 3))
    def list_batches(self, who: str, limit: int) -> None:
        page = self.call(who, "GET", f"/batches?limit={limit}").json()
        assert len(page["data"]) == min(limit, len(self.made_batches[who]))
        assert page["has_more"] == (len(self.made_batches[who]) > limit)

    @invariant()
    def each_lists_exactly_its_own(self) -> None:
        for who in "ab":
            page = self.call(who, "GET", "/batches?limit=100").json()
            listed = {b["id"] for b in page["data"]}
            assert listed == self.made_batches[who] and not page["has_more"]
            for batch in page["data"]:
                if batch["id"] in self.foreign_input:
                    assert batch["status"] not in _READ_INPUT, batch
            results = {
                b[key]
                for b in page["data"]
                for key in ("output_file_id", "error_file_id")
                if b[key] is not None
            }
            self.learn(who, iter(results))
            files = self.call(who, "GET", "/files?limit=10000").json()
            assert {f["id"] for f in files["data"]} == self.live_files[who] | results
            if self.receiver is not None:
                ended = {b["id"] for b in page["data"] if b["status"] in _ENDED}
                assert self.hooked(who) == ended

    def hooked(self, who: str) -> set[str]:
        """The batches whose events reached ``who``'s endpoint (signatures checked)."""
        assert self.receiver is not None
        path = "/" + self.hook_paths[who]
        return {event.data.id for event in verified(self.receiver, path)}


class ProjectsAndUploads(Projects):
    """The same, and the Uploads API's calls too (an upload another key's)."""

    uploads = Bundle("uploads")

    @rule(target=uploads, who=WHO)
    def start_upload(self, who: str) -> tuple[str, str]:
        body = {"bytes": len(_LINE), "filename": "in.jsonl",
                "mime_type": "text/jsonl", "purpose": "batch"}  # fmt: skip
        answer = self.call(who, "POST", "/uploads", json=body)
        assert answer.status_code == 200, answer.text
        upload_id = answer.json()["id"]
        self.learn(who, iter([upload_id]))
        return who, upload_id

    @rule(
        who=WHO, upload=uploads, call=st.sampled_from(["parts", "complete", "cancel"])
    )
    def upload_call(self, who: str, upload: tuple[str, str], call: str) -> None:
        owner, upload_id = upload
        parts = self.parts.setdefault(upload_id, [])
        each: dict[str, dict[str, Any]] = {
            "parts": {"files": {"data": ("p", _LINE)}},
            "complete": {"json": {"part_ids": parts[:1]}},
            "cancel": {},
        }
        options = each[call]
        path = "/uploads/{}/" + call
        if owner != who:
            self.as_unknown(who, "POST", path, upload_id, **options)
            return
        answer = self.call(who, "POST", path.format(upload_id), **options)
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code != 200:
            return  # not pending, or the parts do not add up: the owner is told
        got = answer.json()
        if call == "parts":
            parts.append(got["id"])
            self.learn(who, iter([got["id"]]))
        elif call == "complete":
            self.live_files[who].add(got["file"]["id"])
            self.learn(who, iter([got["file"]["id"]]))


def _run(
    make_emulator: Callable[[], Emulator],
    receiver: WebhookReceiver | None = None,
    machine: type[Projects] = Projects,
    **options: Any,
) -> None:
    Projects.make_emulator = staticmethod(make_emulator)
    Projects.receiver = receiver
    run_state_machine_as_test(
        machine,
        settings=settings(
            **{
                "max_examples": 12,
                "stateful_step_count": 20,
                "deadline": None,
                "suppress_health_check": [HealthCheck.too_slow],
                **options,
            }
        ),
    )


#: A broken store is caught as soon as found: no shrinking, one failure.
_FOUND: dict[str, Any] = {
    "phases": (Phase.generate,),
    "report_multiple_bugs": False,
    "database": None,
}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def emulator(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Emulator]:
    """One emulator for all of a test's examples, on each kind of store."""
    clock = VirtualClock()
    if request.param == "memory":
        yield Emulator(clock=clock, store=MemoryBatchStore())
        return
    store: SQLStore
    if request.param == "sqlite":
        store = SQLiteStore(tmp_path / "projects.sqlite")
    else:
        store = open_store(request.getfixturevalue("postgres_url"))
    try:
        yield Emulator(clock=clock, store=store, ids=store.ids())
    finally:
        store.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(new_secret()) as made:
        yield made


def test_no_project_ever_sees_another_projects_objects(
    emulator: Emulator, receiver: WebhookReceiver
) -> None:
    _run(lambda: emulator, receiver, ProjectsAndUploads, stateful_step_count=30)


def _leaky_get(get: Callable[..., Any]) -> Callable[..., Any]:
    def get_any(object_id: str, *, project: str | None = None) -> Any:
        return get(object_id)  # the project ignored: every key sees all

    return get_any


def _leaky_batches() -> Emulator:
    store = MemoryBatchStore()
    store.get = _leaky_get(store.get)  # type: ignore[method-assign]
    return Emulator(clock=VirtualClock(), store=store)


def _leaky_files() -> Emulator:
    store = MemoryBatchStore()
    store.files.get = _leaky_get(store.files.get)  # type: ignore[method-assign]
    return Emulator(clock=VirtualClock(), store=store)


def _leaky_listing() -> Emulator:
    store = MemoryBatchStore()
    page = store.page

    def page_of_all(after: str | None, limit: int, *, project: Any = None) -> Any:
        return page(after, limit)

    store.page = page_of_all  # type: ignore[method-assign]
    return Emulator(clock=VirtualClock(), store=store)


@pytest.mark.parametrize("broken", [_leaky_batches, _leaky_files, _leaky_listing])
def test_the_property_catches_a_store_that_ignores_the_project(
    broken: Callable[[], Emulator],
) -> None:
    # The test above can fail: lookups or a listing that leave out the project.
    with pytest.raises(AssertionError):
        _run(broken, **_FOUND)


def _leaky_webhooks() -> Emulator:
    store = MemoryBatchStore()
    add = store.outbox.add_webhook_endpoint

    def add_for_all(url: str, project: str | None = None) -> None:
        add(url)  # the project ignored: every project's events go there

    store.outbox.add_webhook_endpoint = add_for_all  # type: ignore[method-assign]
    return Emulator(clock=VirtualClock(), store=store)


def test_the_property_catches_events_sent_to_another_projects_endpoint(
    receiver: WebhookReceiver,
) -> None:
    with pytest.raises(AssertionError):
        _run(_leaky_webhooks, receiver, **_FOUND)


def test_unknown_like_keeps_the_shape() -> None:
    for object_id in ("file-" + "a" * 22, "batch_" + "b" * 32):
        other = _unknown_like(object_id)
        assert len(other) == len(object_id) and other[:5] == object_id[:5]
        assert json.dumps(other) != json.dumps(object_id)
