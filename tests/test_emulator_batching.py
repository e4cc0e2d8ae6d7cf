"""Conformance of the emulator's concurrency, with plain HTTP and its ground truth, independent of
the exporter's client: ``num_parallel`` slots per loaded model (an embedding model has one), a
FIFO wait beyond them that Ollama counts in ``total_duration`` and in none of its parts, and the
batching model — each extra sequence in a runner slows every sequence's decode by
``batch_slowdown``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ollama_emulator import RequestRecord, chat_model, embedding_model
from test_emulator_conformance import USER, fast, post

SLOWDOWN = 0.25


def decode_rate(final: dict[str, Any]) -> float:
    return float(final["eval_count"]) / final["eval_duration"] * 1e9


def wait_seconds(final: dict[str, Any]) -> float:
    parts = ("load_duration", "prompt_eval_duration", "eval_duration")
    return float(final["total_duration"] - sum(final[k] for k in parts)) / 1e9


def overlap(a: RequestRecord, b: RequestRecord) -> bool:
    assert a.finished is not None and b.finished is not None
    return a.first_chunk is not None and b.first_chunk is not None and (
        a.first_chunk < b.finished and b.first_chunk < a.finished
    )


@pytest.mark.parametrize("together", [2, 4])
async def test_each_extra_sequence_slows_every_sequence_by_the_slowdown(
    emulator_factory, together: int
) -> None:
    model = fast(chat_model, decode_tokens_per_second=200.0, output_tokens=60,
                 batch_slowdown=SLOWDOWN)  # fmt: skip
    emu = await emulator_factory([model], num_parallel=4)
    emu.preload("llama3.2")
    payload = {"model": "llama3.2", "messages": USER}
    alone = decode_rate((await post(emu.url, "/api/chat", payload)).objs()[-1])
    replies = await asyncio.gather(
        *(post(emu.url, "/api/chat", payload) for _ in range(together))
    )
    rates = [decode_rate(r.objs()[-1]) for r in replies]
    assert alone == pytest.approx(200.0, rel=0.03)
    expected = alone / (1 + SLOWDOWN * (together - 1))
    for rate in rates:  # every sequence, not only the newest
        assert rate == pytest.approx(expected, rel=0.08)
    records = emu.records_for("/api/chat")[1:]
    assert all(overlap(a, b) for a in records for b in records if a is not b)  # batched


async def test_beyond_the_slots_requests_wait_in_order_and_the_wait_is_in_the_total(
    emulator_factory,
) -> None:
    model = fast(chat_model, decode_tokens_per_second=200.0, output_tokens=30)
    emu = await emulator_factory([model], num_parallel=2)
    emu.preload("llama3.2")
    payload = {"model": "llama3.2", "messages": USER}
    replies: list[Any] = []
    for _ in range(3):  # arrivals in a known order
        replies.append(asyncio.create_task(post(emu.url, "/api/chat", payload)))
        await asyncio.sleep(0.005)
    finals = [r.objs()[-1] for r in await asyncio.gather(*replies)]
    a, b, c = emu.records_for("/api/chat")
    assert overlap(a, b)  # two slots
    assert c.first_chunk is not None and a.finished is not None
    assert c.first_chunk >= min(a.finished, b.finished or a.finished) - 0.005  # FIFO: waited
    assert wait_seconds(finals[0]) < 0.01 and wait_seconds(finals[1]) < 0.01
    assert wait_seconds(finals[2]) == pytest.approx(
        min(a.finished, b.finished or a.finished) - c.arrived, abs=0.02
    )
    assert finals[2]["load_duration"] < 20_000_000  # the slot wait is not load time


async def test_an_embedding_model_has_one_slot(emulator_factory) -> None:
    model = fast(embedding_model, prefill_tokens_per_second=2_000.0)
    emu = await emulator_factory([model], num_parallel=4)
    emu.preload(model.name)
    payload = {"model": model.name, "input": ["the sky is blue " * 40]}
    await asyncio.gather(*(post(emu.url, "/api/embed", payload) for _ in range(2)))
    first, second = sorted(emu.records_for("/api/embed"), key=lambda r: r.arrived)
    assert first.finished is not None and second.finished is not None
    # One slot: the second embedding ran after the first, though four chat slots exist.
    assert second.finished - second.arrived >= 1.8 * (first.finished - first.arrived) - 0.01
