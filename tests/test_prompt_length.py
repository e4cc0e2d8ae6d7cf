"""The prompt-length axis against the emulator: lengths planned against the loaded context (and
never ``num_ctx`` sent), TTFT and prefill rate per length against ground truth, the nonce
against the prefix cache, and the rows and series it feeds."""

from __future__ import annotations

import json
import statistics

import httpx
import pytest
from ollama_emulator import RequestRecord, chat_model
from service import sample

from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.config.settings import BenchmarkSettings
from ometer_exporter.measure.lengths import CONTEXT_MARGIN, filler, plan_lengths
from ometer_exporter.measure.model import measure_model

LLAMA = "llama3.2:latest"
RATE = 20_000.0  # prefill tokens/s, the linear part
QUADRATIC = 2e-8  # seconds per token², attention's part
TTFT_TOLERANCE = 0.005  # seconds, plus 5 %


def model() -> object:
    return chat_model(LLAMA, prefill_tokens_per_second=RATE, prefill_quadratic=QUADRATIC,
                      decode_tokens_per_second=400.0, output_tokens=64)  # fmt: skip


def expected_rate(tokens: int) -> float:
    """The emulator's configured curve: n tokens over n/R + q·n² seconds."""
    return tokens / (tokens / RATE + QUADRATIC * tokens**2)


def axis_records(emu) -> list[RequestRecord]:
    """Our prompt-length requests (long prompts), in order; the calibration is the first."""
    return [r for r in emu.records_for("/api/chat", LLAMA) if r.prompt_eval_count > 200]


def test_lengths_are_planned_against_the_context() -> None:
    plans = plan_lengths([512, 4080, 4096, 8192], context=4096, trained=131072, num_predict=16)
    assert [(p.configured, p.tokens, p.capped) for p in plans[:3]] == [
        (512, 512, False),
        (4080, 4096 - 16 - CONTEXT_MARGIN, True),
        (4096, 4096 - 16 - CONTEXT_MARGIN, True),
    ]
    assert plans[3].tokens is None and plans[3].skipped and "4096-token context" in plans[3].skipped
    # Never above the trained context, whatever the server's default.
    (short,) = plan_lengths([2048], context=32768, trained=1024, num_predict=16)
    assert short.tokens is None and short.skipped and "1024-token context" in short.skipped


async def test_each_length_against_ground_truth(emulator_factory) -> None:
    emu = await emulator_factory([model()], default_num_ctx=4096)
    emu.preload(LLAMA)
    settings = BenchmarkSettings(runs=3, num_predict=16, prompt_tokens=(512, 2048, 8192))
    async with OllamaClient(emu.url) as client:
        result = await measure_model(
            client, LLAMA, ["completion"], settings, trained_context=131072
        )
    assert result is not None and result.success
    assert not [r for r in emu.records_for("/api/chat") if "num_ctx" in r.body.get("options", {})]
    assert emu.loaded()[LLAMA].context_length == 4096  # nothing reloaded it
    short, mid, long = result.lengths
    assert long.plan.skipped and "4096-token context" in long.plan.skipped and not long.runs
    assert result.calibration is not None and result.tokens_per_word
    records = axis_records(emu)[1:]  # after the calibration
    assert len(records) == 6
    for length, recs in ((short, records[:3]), (mid, records[3:])):
        assert len(length.good_runs) == 3
        truth = statistics.median(r.first_chunk - r.arrived for r in recs)  # type: ignore[operator]
        assert length.ttft == pytest.approx(truth, abs=TTFT_TOLERANCE, rel=0.05)
        tokens = length.prompt_tokens
        assert tokens is not None and tokens == pytest.approx(length.plan.configured, rel=0.10)
        assert length.prefill_tokens_per_second == pytest.approx(expected_rate(tokens), rel=0.03)
        assert all(r.prompt_cached_tokens < 8 for r in recs)  # the nonce beat the prefix cache
    slope = result.ttft_per_1k_tokens
    # TTFT grows by (1/R + q·(n1+n2))·Δn between the two lengths: the fitted slope says so.
    n1, n2 = short.prompt_tokens or 0, mid.prompt_tokens or 0
    assert slope == pytest.approx((1 / RATE + QUADRATIC * (n1 + n2)) * 1000, rel=0.15)


async def test_without_the_nonce_the_prefix_cache_would_serve_the_prompt(
    emulator_factory,
) -> None:
    emu = await emulator_factory([model()])
    emu.preload(LLAMA)
    text = filler(1500, "fixed")[len("[fixed] ") :]  # the same words, no nonce
    async with httpx.AsyncClient(base_url=emu.url, timeout=30) as http:
        for _ in range(2):
            body = {"model": LLAMA, "stream": False, "options": {"num_predict": 4},
                    "messages": [{"role": "user", "content": text}]}  # fmt: skip
            assert (await http.post("/api/chat", content=json.dumps(body))).status_code == 200
    first, second = emu.records_for("/api/chat", LLAMA)
    assert first.prompt_cached_tokens < 8
    assert second.prompt_cached_tokens >= second.prompt_eval_count - 1  # all but the last token
    # Ollama counts cached tokens in prompt_eval_count but not their time: the rate inflates.
    fast = second.metrics["prompt_eval_count"] / second.metrics["prompt_eval_duration"]
    slow = first.metrics["prompt_eval_count"] / first.metrics["prompt_eval_duration"]
    assert fast > 10 * slow


async def test_the_axis_reaches_metrics_and_export(emulator_factory, start_exporter) -> None:
    emu = await emulator_factory([model()], default_num_ctx=4096, time_scale=0.2)
    emu.preload(LLAMA)
    running = await start_exporter(f"""
benchmark: {{interval: 1h, idle_before: 0s, runs: 1, prompt_tokens: [256, 1024, 8192]}}
targets: [{{name: local, url: "{emu.url}"}}]
""")
    await running.cycles("local", 1)
    m = await running.metrics()
    labels = {"target": "local", "model": LLAMA}
    for n in ("256", "1024"):
        assert sample(m, "ometer_prompt_length_time_to_first_token_seconds", **labels,
                      prompt_tokens=n)  # fmt: skip
        tokens = sample(m, "ometer_prompt_length_prompt_tokens", **labels, prompt_tokens=n)
        assert tokens == pytest.approx(int(n), rel=0.10)
        assert sample(m, "ometer_prompt_length_prefill_tokens_per_second", **labels,
                      prompt_tokens=n)  # fmt: skip
    assert sample(m, "ometer_prompt_length_time_to_first_token_seconds", **labels,
                  prompt_tokens="8192") is None  # fmt: skip
    assert (sample(m, "ometer_prompt_ttft_seconds_per_1k_tokens", **labels) or 0) > 0
    rows = (await running.http.get("/export?view=prompt_length")).json()
    assert [r["prompt_tokens"] for r in rows] == [256, 1024, 8192]
    assert rows[2]["skipped"] and "4096-token context" in rows[2]["skipped"]
    assert rows[0]["time_to_first_token_seconds"] and rows[0]["skipped"] is None
    csv = (await running.http.get("/export?view=prompt_length&format=csv")).text
    assert csv.splitlines()[0].startswith("target,model,prompt_tokens,actual_prompt_tokens")
    bad = await running.http.get("/export?view=lengths")
    assert bad.status_code == 400 and "view=" in bad.text and "prompt_length" in bad.text


@pytest.mark.parametrize("engine", ["llama.cpp", "vllm"])
async def test_the_axis_on_an_openai_compatible_server(emulator_factory, engine) -> None:
    """llama-server says its context in /props, vLLM as ``max_model_len`` (and refuses a prompt
    and max_tokens beyond it): the axis plans against it, calibrates from the server's own
    prompt count, and needs no /api/ps."""
    from ometer_exporter.config.settings import TargetSettings
    from ometer_exporter.loop.selection import target_state
    from ometer_exporter.loop.worker import TargetWorker
    from ometer_exporter.store.store import Store

    emu = await emulator_factory([model()], engine=engine, default_num_ctx=4096)
    target = TargetSettings(
        name="llamacpp", url=emu.url + "/v1", cloud=False, api="openai", select="all",
        benchmark=BenchmarkSettings(runs=2, num_predict=16, prompt_tokens=(512, 2048, 8192)),
    )  # fmt: skip
    store = Store()
    store.set_targets([target_state(target)])
    worker = TargetWorker(target, store)
    try:
        await worker.cycle()
    finally:
        await worker.aclose()
    record = store.snapshot.models[("llamacpp", LLAMA)].benchmark
    assert record is not None and record.length_prompt_tokens == (512, 2048, 8192)
    for configured, counted in zip((512, 2048), record.length_actual_tokens, strict=False):
        assert counted == pytest.approx(configured, rel=0.10)
    assert all(t is not None and t > 0 for t in record.length_ttft[:2])
    assert "4096-token context" in record.length_note[2]
