"""The emulator serves the installed ``openai`` client's models, the pinned at least."""

import json
import subprocess
import sys
import textwrap

from batchfsm.emulator import DEFAULT_MODELS, Emulator
from batchfsm.emulator._catalogue import client_models
from tests.blocking import without
from tests.test_endpoints import CLIENT_TYPES

SHOW_MODELS = """
import json
from batchfsm.emulator import Emulator
emu = Emulator()
line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}}
upload = emu.create_file(json.dumps(line).encode(), "in.jsonl", "batch")
batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
emu.clock.advance(60)
models = {e: sorted(m) for e, m in emu.models.items()}
models["gpt-9 batch"] = [emu.retrieve_batch(batch.id).status.value]
print(json.dumps(models))
"""


def models_in(code_before: str, tmp_path=None) -> dict[str, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", code_before + SHOW_MODELS],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=120,
    )
    return {e: set(m) for e, m in json.loads(result.stdout).items()}


def test_the_installed_clients_models_are_served():
    served = Emulator().models
    for endpoint, theirs in CLIENT_TYPES.items():
        assert theirs <= served[endpoint]
        assert client_models()[endpoint] == theirs


def test_without_the_client_the_pinned_list_is_served():
    served = models_in(without("openai"))
    assert served.pop("gpt-9 batch") == {"failed"}  # model_not_found
    assert served == {e: set(m) for e, m in DEFAULT_MODELS.items()}


def test_a_newer_client_adds_its_models(tmp_path):
    # A real (if small) openai package of a later release, first on the path.
    types = tmp_path / "openai" / "types"
    (types / "shared").mkdir(parents=True)
    (tmp_path / "openai" / "__init__.py").write_text("")
    (types / "__init__.py").write_text(
        "from typing import Literal\nEmbeddingModel = Literal['text-embedding-9']\n"
    )
    (types / "shared" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from typing import Literal, Union
            ChatModel = Literal["gpt-9", "gpt-9-2031-01-01"]
            ResponsesModel = Union[str, ChatModel, Literal["gpt-9-pro"]]
            """
        )
    )
    path = f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\n"
    served = models_in(path, tmp_path)
    assert served["gpt-9 batch"] == {"completed"}
    chat = served["/v1/chat/completions"]
    assert {"gpt-9", "gpt-9-2031-01-01"} <= chat
    assert DEFAULT_MODELS["/v1/chat/completions"] <= chat  # the floor stays
    assert {"gpt-9", "gpt-9-pro"} <= served["/v1/responses"]
    assert "text-embedding-9" in served["/v1/embeddings"]
    assert served["/v1/videos"] == set(DEFAULT_MODELS["/v1/videos"])  # not readable
