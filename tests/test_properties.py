"""Property tests: arbitrary input never crashes; malformed input is a typed error."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import httpx
import yaml
from factories import entry, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ometer_exporter.client.errors import OllamaError
from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.client.replies import ChatStream
from ometer_exporter.config.checks import ConfigError
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import Overrides, Settings
from ometer_exporter.store.records import ModelEntry
from ometer_exporter.views.query import Query
from ometer_exporter.views.rows import rows, to_csv, to_json

# -- the stream parser ----------------------------------------------------------------------

GOOD_CHUNK = (
    b'{"model":"m","created_at":"2026-08-22T10:01:02Z",'
    b'"message":{"role":"assistant","content":"Hi"},"done":false}\n'
)
DONE = (
    b'{"model":"m","created_at":"2026-08-22T10:01:02Z","message":{"role":"assistant",'
    b'"content":""},"done":true,"done_reason":"stop","eval_count":2,"eval_duration":1000}\n'
)
pieces = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([GOOD_CHUNK, DONE, b"\n", b'{"error":"boom"}\n', b"null\n", b"[1,2]\n",
                     b'{"done":true,"eval_count":-5}\n', b'{"done":true,"eval_count":"x"}\n',
                     b'{"message":"not an object"}\n', b"\xff\xfe\n"]),
)  # fmt: skip


def _chat_over(body_parts: list[bytes], status: int) -> ChatStream | OllamaError:
    async def stream() -> object:
        for part in body_parts:
            yield part

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=stream())  # type: ignore[arg-type]

    async def go() -> ChatStream | OllamaError:
        client = OllamaClient("http://ollama.test", transport=httpx.MockTransport(handler))
        try:
            return await client.chat("m", [{"role": "user", "content": "hi"}], options={})
        except OllamaError as exc:  # the only kind of failure allowed
            return exc
        finally:
            await client.aclose()

    return asyncio.run(go())


@given(st.lists(pieces, max_size=12), st.sampled_from([200, 200, 200, 400, 404, 500, 503, 302]))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_stream_parser_never_crashes(body_parts: list[bytes], status: int) -> None:
    outcome = _chat_over(body_parts, status)
    if isinstance(outcome, OllamaError):
        assert outcome.error_type.value in {
            "timeout", "connect", "auth", "rate_limited", "not_found", "http_4xx", "http_5xx",
            "stream_incomplete", "stream_error", "bad_response",
        }  # fmt: skip
        assert len(str(outcome)) < 400 and "\n" not in str(outcome)
    else:
        assert status == 200
        assert outcome.done.eval_count is None or outcome.done.eval_count >= 0


@given(st.binary(min_size=1, max_size=200))
def test_garbage_after_good_chunks_is_typed(garbage: bytes) -> None:
    outcome = _chat_over([GOOD_CHUNK, garbage], 200)
    assert isinstance(outcome, OllamaError | ChatStream)


# -- the config loader ----------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20))  # fmt: skip
keys = st.sampled_from(["storage", "benchmark", "targets", "name", "url", "interval", "runs",
                        "timeouts", "select", "include", "api_key_env", "think", "jitter",
                        "x"])  # fmt: skip
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)  # fmt: skip


def _load(tmp: Path, text: str) -> Settings | ConfigError:
    path = tmp / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        return load_settings(Overrides(config_file=str(path)), {})
    except ConfigError as exc:
        problems = exc.problems
    assert problems and all(isinstance(p, str) and p for p in problems)
    return ConfigError(problems)


@given(documents)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_config_loader_structures(tmp_path: Path, document: object) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    assert isinstance(_load(tmp_path, text), Settings | ConfigError)


@given(st.text(max_size=300))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_config_loader_text(tmp_path: Path, text: str) -> None:
    assert isinstance(_load(tmp_path, text), Settings | ConfigError)


# -- the export -------------------------------------------------------------------------------

# A name that itself starts with a quote and a formula character reads in CSV exactly like a
# neutralised formula (`'=`), so no decoder could tell the two apart: such names are left out.
names = st.text(min_size=1, max_size=40).filter(
    lambda s: not (s[:1] == "'" and s[1:2] != "" and s[1:2] in "=+-@\t\r")
)


@given(st.lists(names, min_size=1, max_size=6, unique=True), st.text(max_size=60))
def test_export_round_trips(models: list[str], error: str) -> None:
    import dataclasses

    entries: list[ModelEntry] = []
    for i, name in enumerate(models):
        e = entry("local", name, ttft=0.1 * (i + 1))
        if i == 0 and e.benchmark is not None:
            bad = dataclasses.replace(e.benchmark, success=False, error=error)
            e = dataclasses.replace(e, benchmark=bad)
        entries.append(e)
    items = rows(snapshot(entries), Query(verbose=True))
    decoded = json.loads(to_json(items))
    assert sorted(r["model"] for r in decoded) == sorted(models)
    table = list(csv.reader(io.StringIO(to_csv(items), newline="")))
    header, body = table[0], table[1:]
    assert len(body) == len(models)
    column = header.index("model")
    for cells in body:
        cell = cells[column]
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        neutralised = cell[:1] == "'" and cell[1:2] != "" and cell[1:2] in "=+-@\t\r"
        original = cell[1:] if neutralised else cell
        assert original in models
