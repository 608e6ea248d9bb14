"""``openai.AsyncOpenAI`` in-process, and a timeout tested by stalling a route."""

import asyncio

import openai
import pytest


def test_the_async_client(batch_emulator_async_openai):
    async def main():
        async with batch_emulator_async_openai as client:
            return (await client.batches.list()).data

    assert asyncio.run(main()) == []


def test_a_stalled_answer_times_out(batch_emulator, batch_emulator_openai):
    batch_emulator.stall_next("/v1/batches", 2.0)
    with pytest.raises(openai.APITimeoutError):
        batch_emulator_openai.batches.list(timeout=0.2)
    assert batch_emulator_openai.batches.list().data == []  # the next one answers
