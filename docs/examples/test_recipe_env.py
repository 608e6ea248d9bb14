"""Code that builds its own client reaches the emulator through the environment."""

import openai


def count_batches() -> int:
    """The code under test: it builds its client with no arguments."""
    with openai.OpenAI() as client:
        return len(client.batches.list().data)


def test_code_that_builds_its_own_client(batch_emulator_env):
    assert count_batches() == 0
    batch_emulator_env.assert_called("GET", "/v1/batches", times=1, status=200)
