"""The reply parsers: every field of what a server sends is bounded, and every refusal is typed.

Each case is one found by an adversarial pass (see docs/reliability.md, "Hostile servers"):
the value that used to get through, and what it is now.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ometer_exporter.client.errors import (
    OllamaBadResponse,
    OllamaError,
    OllamaHTTPError,
    OllamaTimeout,
    redact,
)
from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.client.replies import (
    MAX_DEPTH,
    MAX_INT,
    MAX_LABEL_CHARS,
    MAX_LIST_ITEMS,
    MAX_NAME_CHARS,
    LineSplitter,
    TagModel,
    done_fields,
    load_json,
    parse_line,
    parse_loaded,
    parse_show,
    parse_tag,
    parse_timestamp,
)
from ometer_exporter.client.replies import DoneFields as Done
from ometer_exporter.config.settings import BenchmarkSettings, TargetSettings, Timeouts
from ometer_exporter.loop.selection import reported_models
from ometer_exporter.measure.results import ModelResult, RunResult

HUGE = 10**400  # a 401-digit integer: json.loads reads it, float() of it overflows


def tag(**fields: Any) -> dict[str, Any]:
    details = fields.pop("details", {})
    base: dict[str, Any] = {
        "name": "llama3.2:latest",
        "model": "llama3.2:latest",
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "modified_at": "2026-08-22T10:01:02.123456789+02:00",
        "details": {"format": "gguf", "family": "llama", "families": ["llama"],
                    "parameter_size": "3.2B", "quantization_level": "Q4_K_M", **details},
    }  # fmt: skip
    base.update(fields)
    return base


# -- integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["size"])
@pytest.mark.parametrize("value", [HUGE, 2**63, -1, 1.5, "12", True])
def test_tag_integer_out_of_range_is_refused(field: str, value: object) -> None:
    with pytest.raises(OllamaBadResponse, match=rf"/api/tags: field '{field}' is not an integer"):
        parse_tag(tag(**{field: value}))


def test_tag_integers_up_to_int64_are_kept() -> None:
    parsed = parse_tag(tag(size=MAX_INT, details={"context_length": MAX_INT}))
    assert parsed.size == MAX_INT and parsed.context_length == MAX_INT
    with pytest.raises(OllamaBadResponse, match="'context_length'"):
        parse_tag(tag(details={"context_length": HUGE}))


def test_show_numbers_out_of_range_are_unknown() -> None:
    info = {"general.architecture": "llama", "general.parameter_count": HUGE,
            "llama.context_length": 2**63, "llama.embedding_length": 3072}  # fmt: skip
    show = parse_show({"model_info": info, "capabilities": ["completion"]})
    assert (show.parameter_count, show.context_length, show.embedding_length) == (None, None, 3072)


@pytest.mark.parametrize("field", ["size", "size_vram", "context_length"])
def test_ps_integer_out_of_range_is_refused(field: str) -> None:
    entry = {"name": "llama3.2:latest", "size": 1, "size_vram": 1, field: HUGE}
    with pytest.raises(OllamaBadResponse, match=f"/api/ps: field '{field}'"):
        parse_loaded(entry)


@pytest.mark.parametrize("field", ["eval_count", "eval_duration", "prompt_eval_count",
                                   "total_duration", "load_duration"])  # fmt: skip
def test_done_line_integer_out_of_range_is_refused(field: str) -> None:
    with pytest.raises(OllamaBadResponse, match=f"/api/embed: field '{field}'"):
        done_fields({"done": True, field: HUGE}, "/api/embed")
    assert getattr(done_fields({field: MAX_INT}), field) == MAX_INT


# -- strings, lists, timestamps ------------------------------------------------------------------


def test_lone_surrogate_in_a_name_is_refused() -> None:
    entry = json.loads('{"name": "llama\\ud800:latest"}')
    with pytest.raises(OllamaBadResponse, match="unprintable"):
        parse_tag(entry)
    with pytest.raises(OllamaBadResponse, match="unprintable"):
        parse_loaded(entry)


@pytest.mark.parametrize(("length", "ok"), [(MAX_NAME_CHARS, True), (MAX_NAME_CHARS + 1, False),
                                            (2 << 20, False)])  # fmt: skip
def test_name_length_is_capped(length: int, ok: bool) -> None:
    name = "m" * (length - len(":latest")) + ":latest"
    if ok:
        assert parse_tag(tag(name=name)).name == name
    else:
        with pytest.raises(OllamaBadResponse, match=f"longer than {MAX_NAME_CHARS}"):
            parse_tag(tag(name=name))


def test_bad_labels_are_unknown_not_fatal() -> None:
    parsed = parse_tag(tag(digest="d" * (MAX_LABEL_CHARS + 1),
                           details={"family": "ll\ud800", "format": "x\n",
                                    "quantization_level": 5}))  # fmt: skip
    assert (parsed.digest, parsed.family, parsed.format, parsed.quantization_level) == (
        "", "", "", "",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("size", "kept"),
    [("8.0B", "8.0B"), ("137M", "137M"), ("9" * 400, ""), ("9" * 31 + "T", ""),
     ("9223372036854775", "9223372036854775"), ("unknown", "unknown")],
)  # fmt: skip
def test_parameter_size_that_would_overflow_is_unknown(size: str, kept: str) -> None:
    assert parse_tag(tag(details={"parameter_size": size})).parameter_size == kept


def test_capabilities_and_families_are_capped_and_distinct() -> None:
    caps = [f"cap{i}" for i in range(50_000)]
    parsed = parse_tag(tag(capabilities=["tools", "tools", *caps],
                           details={"families": ["llama"] * 10 + caps}))  # fmt: skip
    assert parsed.capabilities is not None and len(parsed.capabilities) == MAX_LIST_ITEMS
    assert parsed.capabilities[:2] == ("tools", "cap0")
    assert parsed.families[:2] == ("llama", "cap0") and len(parsed.families) == MAX_LIST_ITEMS
    show = parse_show({"capabilities": caps})
    assert show.capabilities == tuple(caps[:MAX_LIST_ITEMS])


@pytest.mark.parametrize(
    "value",
    ["10000-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z",
     "0001-01-01T00:00:00", "2026-08-22T10:01:02", "not a time", "1" * 100, 5],
)  # fmt: skip
def test_unusable_timestamps_are_unknown(value: object) -> None:
    assert parse_timestamp(value) is None
    assert parse_tag(tag(modified_at=value)).modified_at is None


def test_good_timestamps_are_kept_with_their_zone() -> None:
    parsed = parse_timestamp("2026-08-22T10:01:02.123456789+02:00")
    assert parsed is not None
    assert parsed.astimezone(UTC) == datetime(2026, 8, 22, 8, 1, 2, 123456, tzinfo=UTC)


# -- nesting -------------------------------------------------------------------------------------


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_nesting_is_checked_before_decoding(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    ok = (opener * MAX_DEPTH + "1" + closer * MAX_DEPTH).encode()
    assert load_json(ok, "/api/show") is not None
    deep = (opener * (MAX_DEPTH + 1) + "1" + closer * (MAX_DEPTH + 1)).encode()
    with pytest.raises(OllamaBadResponse, match="nests deeper than 32"):
        load_json(deep, "/api/show")
    # 100,000 levels: json.loads would raise RecursionError, which is no ValueError.
    with pytest.raises(OllamaBadResponse, match="/api/ps: the reply nests deeper"):
        load_json((opener * 100_000).encode(), "/api/ps")
    with pytest.raises(OllamaBadResponse, match="/api/chat"):
        parse_line('{"message":' * 100_000)
    splitter = LineSplitter()
    assert splitter.feed(b'{"done":false}\n' * 40) == ['{"done":false}'] * 40  # 40 shallow
    with pytest.raises(OllamaBadResponse, match="/api/chat: a streamed line: the reply nests"):
        splitter.feed(b'{"done":false}\n' + b"[" * 40 + b"\n")
    # Many lines in one read: brackets inside a string are content, not nesting.
    content = json.dumps({"message": {"content": "[" * 50}}).encode()
    assert len(splitter.feed(b'{"done":false}\n' * 40 + content + b"\n")) == 41
    deep = b'{"a":' * 40 + b"1" + b"}" * 40
    with pytest.raises(OllamaBadResponse, match="nests deeper than 32"):
        splitter.feed(b'{"done":false}\n' * 40 + deep + b"\n")


@pytest.mark.parametrize(
    "tail",
    [b'"' + b'\\"' * 400_000, b'"' * 800_001, b'"\\' * 400_000,
     (b'"' + b'\\"' * 1000 + b"\\") * 400],
    ids=["escaped-quotes", "quotes", "quote-backslash", "unterminated-runs"],
)  # fmt: skip
def test_the_nesting_scan_is_linear_on_unterminated_strings(tail: bytes) -> None:
    """A string scan retried from each escaped quote took 11.7 s for 40 kB (hours for 1 MB)."""
    import time

    started = time.perf_counter()
    with pytest.raises(OllamaBadResponse, match="nests deeper"):
        load_json(b"[" * 40 + tail, "/api/show")
    with pytest.raises(OllamaBadResponse):
        LineSplitter().feed(b"[" * 40 + tail + b"\n")
    assert time.perf_counter() - started < 5.0  # linear: ~0.2 s here, under load included


tricky_text = st.text(st.sampled_from('[]{}"\\:,x\n\u00e9'), max_size=12)


@given(st.integers(0, 45), st.lists(st.booleans(), min_size=45, max_size=45), tricky_text)
def test_valid_json_is_refused_exactly_when_too_deep(depth: int, kinds: list[bool],
                                                     leaf: str) -> None:  # fmt: skip
    value: Any = leaf
    for as_list in kinds[:depth]:
        value = [value, leaf] if as_list else {leaf: value, "k": [leaf]}
    raw = json.dumps(value).encode()
    real_depth = _depth(value)
    if real_depth <= MAX_DEPTH:
        assert load_json(raw, "/api/show") == value
    else:
        with pytest.raises(OllamaBadResponse, match="nests deeper"):
            load_json(raw, "/api/show")


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"message": {"content": "[{" * 5000 + '\\"]'}, "done": False})
    assert parse_line(text)["message"]["content"].startswith("[{[{")
    assert load_json(text.encode(), "/api/chat")["done"] is False


@given(st.binary(max_size=400))
def test_load_json_only_ever_returns_or_refuses(raw: bytes) -> None:
    outcome: object
    try:
        outcome = load_json(raw, "/api/tags")
    except OllamaBadResponse as exc:
        outcome = exc
    if isinstance(outcome, OllamaBadResponse):
        assert str(outcome).startswith("/api/tags: ")


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-HUGE, max_value=HUGE),
              st.floats(), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=30,
)  # fmt: skip
tag_keys = st.sampled_from(["name", "size", "digest", "modified_at", "details", "capabilities",
                            "remote_host", "remote_model"])  # fmt: skip
detail_keys = st.sampled_from(
    [
        "format",
        "family",
        "families",
        "parameter_size",
        "quantization_level",
        "context_length",
        "embedding_length",
    ]
)


@given(st.dictionaries(tag_keys, json_values), st.dictionaries(detail_keys, json_values))
def test_any_tag_entry_is_bounded_or_refused(
    entry: dict[str, Any], details: dict[str, Any]
) -> None:
    entry = {**entry, "details": details}
    try:
        parsed = parse_tag(entry)
    except OllamaBadResponse:
        return
    assert_bounded(parsed)


def assert_bounded(parsed: TagModel) -> None:
    for value in (parsed.size, parsed.context_length, parsed.embedding_length):
        assert value is None or 0 <= value <= MAX_INT
    assert len(parsed.name) <= MAX_NAME_CHARS and parsed.name.isprintable()
    for text in (
        parsed.digest,
        parsed.format,
        parsed.family,
        parsed.parameter_size,
        parsed.quantization_level,
        *parsed.families,
        *(parsed.capabilities or ()),
    ):
        assert len(text) <= MAX_LABEL_CHARS and text.isprintable()  # fmt: skip
    assert len(parsed.families) <= MAX_LIST_ITEMS
    if parsed.modified_at is not None:
        assert parsed.modified_at.utcoffset() is not None
        assert 1970 <= parsed.modified_at.astimezone(UTC).year <= 9999


# -- finite numbers out of measurement -----------------------------------------------------------


def run(done: Done, *, first_token_at: float, last_token_at: float) -> RunResult:
    return RunResult(warmup=False, sent_at=0.0, ended_at=1.0, done=done,
                     first_token_at=first_token_at, last_token_at=last_token_at)  # fmt: skip


@pytest.mark.parametrize("duration_ns", [0, 1, 999])
def test_rates_over_a_near_zero_duration_are_none(duration_ns: int) -> None:
    done = Done(eval_count=MAX_INT, eval_duration=duration_ns, prompt_eval_count=MAX_INT,
                prompt_eval_duration=duration_ns)  # fmt: skip
    one = run(done, first_token_at=0.5, last_token_at=0.5 + duration_ns * 1e-9)
    assert (one.tokens_per_second, one.prompt_tokens_per_second) == (None, None)
    assert one.client_tokens_per_second is None and one.time_per_output_token is None
    model = ModelResult("m", "chat", 0.0, 1.0, (one,))
    assert model.tokens_per_second is None and model.prompt_tokens_per_second is None
    assert model.client_tokens_per_second is None


def test_rates_over_a_real_duration_are_kept() -> None:
    done = Done(eval_count=101, eval_duration=1_000_000_000)
    one = run(done, first_token_at=0.0, last_token_at=0.5)
    assert one.tokens_per_second == pytest.approx(101.0)
    assert one.client_tokens_per_second == pytest.approx(200.0)
    model = ModelResult(
        "m", "chat", 0.0, 1.0, (one, replace(one, done=replace(done, eval_count=51)))
    )
    assert model.tokens_per_second == pytest.approx(76.0)  # (101 + 51) / 2 s


# -- redaction -----------------------------------------------------------------------------------

KEY = "sk-Ometer-hostile-4f1c9e7a2b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"bad key {KEY}", "bad key <redacted>"),
        (f"bad key {KEY.upper()}!", "bad key <redacted>!"),
        (f"prefix {KEY[:8]} suffix", "prefix <redacted> suffix"),
        (f"middle {KEY[5:19].swapcase()}.", "middle <redacted>."),
        (f"{KEY[:7]} is too short to tell", f"{KEY[:7]} is too short to tell"),
        (f"{KEY}{KEY}", "<redacted>"),
        ("nothing here", "nothing here"),
    ],
)
def test_redaction_is_case_insensitive_and_catches_slices(text: str, expected: str) -> None:
    assert redact(text, KEY) == expected


def test_a_short_key_is_redacted_whole() -> None:
    assert redact("x AbC y", "abc") == "x <redacted> y"
    assert redact("x ab y", "abc") == "x ab y"


# -- the client: entries, error bodies, deadlines ------------------------------------------------


def client_for(handler: Any, **kwargs: Any) -> OllamaClient:
    return OllamaClient("http://ollama.test", transport=httpx.MockTransport(handler), **kwargs)


def json_reply(body: object, status: int = 200) -> Any:
    return raw_reply(json.dumps(body).encode(), status)


def raw_reply(raw: bytes, status: int = 200) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, stream=httpx.ByteStream(raw))

    return handler


async def test_one_bad_tag_entry_is_left_out_with_a_warning(caplog) -> None:
    good = tag(name="good:latest")
    bad = [tag(name="huge:latest", size=HUGE), {"size": 1}, tag(name="b" * 3000)]
    async with client_for(json_reply({"models": [good, *bad, tag(name="also:latest")]})) as c:
        with caplog.at_level(logging.WARNING, "ometer_exporter.client.ollama"):
            names = [t.name for t in await c.tags()]
    assert names == ["good:latest", "also:latest"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "/api/tags: model entry 1 (name 'huge:latest') left out" in lines[0]
    assert "field 'size' is not an integer from 0 to 2**63-1" in lines[0]
    assert "entry 2 (no name)" in lines[1]
    assert "longer than 256 characters" in lines[2] and len(lines[2]) < 400


async def test_many_bad_entries_are_counted_not_each_logged(caplog) -> None:
    entries = [{"name": "x", "size_vram": -1}] * 1000 + [{"name": "ok:latest", "size_vram": 5}]
    async with client_for(json_reply({"models": entries})) as c:
        with caplog.at_level(logging.WARNING, "ometer_exporter.client.ollama"):
            loaded = await c.ps()
    assert [(m.name, m.size_vram) for m in loaded] == [("ok:latest", 5)]
    assert len(caplog.records) == 6
    assert "995 more bad model entries left out" in caplog.records[-1].getMessage()


async def test_a_key_reflected_into_an_entry_drops_that_entry(caplog) -> None:
    reflected = [tag(name=f"{KEY.lower()}:latest"), tag(name="m:latest", details={
        "family": KEY[3:14]}), tag(name="fine:latest")]  # fmt: skip
    async with client_for(json_reply({"models": reflected}), api_key=KEY) as c:
        with caplog.at_level(logging.WARNING, "ometer_exporter.client.ollama"):
            names = [t.name for t in await c.tags()]
    assert names == ["fine:latest"]
    assert all("carries the API key" in r.getMessage() for r in caplog.records)
    assert KEY.lower()[:8] not in caplog.text.lower()


async def test_error_body_echoing_part_of_the_key_is_redacted() -> None:
    body = {"error": f"invalid key {KEY.upper()[:12]}… expected {KEY[4:]}"}
    async with client_for(json_reply(body, 400), api_key=KEY) as c:
        with pytest.raises(OllamaHTTPError) as info:
            await c.tags()
    assert str(info.value) == "/api/tags: HTTP 400: invalid key <redacted>… expected <redacted>"


@pytest.mark.parametrize("status", [200, 500])
async def test_deeply_nested_bodies_are_typed(status: int) -> None:
    async with client_for(raw_reply(b'{"error":' * 50_000, status)) as c:
        for call in (lambda: c.show("m"), c.ps, c.version):
            with pytest.raises(OllamaError) as info:
                await call()
            assert info.value.status == (status if status != 200 else None)
            assert type(info.value) is (OllamaBadResponse if status == 200 else OllamaHTTPError)


FAST = Timeouts(connect=1.0, first_byte=0.2, idle=0.1, total=3.0)


def stream_handler(parts: list[bytes | float]) -> Any:
    async def body() -> AsyncIterator[bytes]:
        import asyncio

        for part in parts:
            if isinstance(part, float):
                await asyncio.sleep(part)
            else:
                yield part

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    return handler


CHUNK = b'{"message":{"role":"assistant","content":"Hi"},"done":false}\n'


@pytest.mark.parametrize(
    ("parts", "phase", "text"),
    [
        ([2.0], "first_byte", "first-byte deadline of 0.2s passed"),
        ([CHUNK, 2.0], "idle", "idle (between chunks) deadline of 0.1s passed"),
    ],
    ids=["headers-then-nothing", "chunk-then-stall"],
)
async def test_the_deadline_message_names_the_deadline(parts: list[bytes | float], phase: str,
                                                       text: str) -> None:  # fmt: skip
    async with client_for(stream_handler(parts), timeouts=FAST) as c:
        with pytest.raises(OllamaTimeout) as info:
            await c.chat("m", [{"role": "user", "content": "hi"}], options={})
    assert info.value.phase == phase
    assert str(info.value) == f"/api/chat: {text}"


# -- the model cap -------------------------------------------------------------------------------


def test_models_beyond_max_models_are_left_out_with_a_warning(caplog) -> None:
    models = [parse_tag(tag(name=f"m{i}:latest")) for i in range(12)]
    target = TargetSettings(name="big", url="http://x", cloud=False,
                            benchmark=BenchmarkSettings(max_models=10))  # fmt: skip
    with caplog.at_level(logging.WARNING, "ometer_exporter.loop.selection"):
        kept, left_out = reported_models(target, models)
    assert [m.name for m in kept] == [f"m{i}:latest" for i in range(10)] and left_out == 2
    assert caplog.records[0].getMessage() == (
        "target big: lists 12 models, more than max_models 10: 2 left out (first 'm10:latest')"
    )
    caplog.clear()
    assert reported_models(target, models[:10])[1] == 0 and not caplog.records
    # A model the target includes by name is kept first, wherever it is listed.
    included = dataclasses.replace(target, include=("m11",))
    kept, _ = reported_models(included, models)
    assert [m.name for m in kept] == [f"m{i}:latest" for i in range(9)] + ["m11:latest"]


key_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<>"),
                   min_size=1, max_size=40)  # fmt: skip


@given(key_text, st.lists(st.one_of(st.text(max_size=20), st.tuples(st.integers(0, 40),
                                                                       st.integers(0, 40))),
                          max_size=8))  # fmt: skip
def test_no_slice_of_the_key_survives_redaction(key: str, pieces: list[Any]) -> None:
    text = "".join(p if isinstance(p, str) else key[p[0] : p[0] + p[1]].swapcase() for p in pieces)
    out = redact(text, key).replace("<redacted>", "\0").lower()  # the marker may spell a key
    width = min(8, len(key))
    assert not any(key[i : i + width].lower() in out for i in range(len(key) - width + 1))


json_objects = st.dictionaries(st.sampled_from(["name", "size", "size_vram", "expires_at",
                                                "context_length", "model_info",
                                                "capabilities"]), json_values)  # fmt: skip


@given(json_objects, json_values)
def test_any_ps_entry_or_show_reply_is_bounded_or_refused(entry: dict[str, Any],
                                                          info: Any) -> None:  # fmt: skip
    try:
        loaded = parse_loaded(entry)
    except OllamaBadResponse:
        pass
    else:
        assert len(loaded.name) <= MAX_NAME_CHARS and loaded.name.isprintable()
        for value in (loaded.size, loaded.size_vram, loaded.context_length):
            assert value is None or 0 <= value <= MAX_INT
    show = parse_show({**entry, "model_info": info})
    for value in (show.parameter_count, show.context_length, show.embedding_length):
        assert value is None or 0 < value <= MAX_INT
    assert len(show.capabilities) <= MAX_LIST_ITEMS
    assert all(len(c) <= MAX_LABEL_CHARS and c.isprintable() for c in show.capabilities)


async def test_a_long_model_list_leaves_the_event_loop_free() -> None:
    """100,000 entries take about a second to parse: in slices, with the loop free between."""
    import asyncio
    import time

    body = json.dumps({"models": [{"name": f"m{i}:latest"} for i in range(100_000)]}).encode()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with client_for(raw_reply(body)) as c:
        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        models = await c.tags()
        took = time.perf_counter() - started
        stop.set()
        await tick
    assert len(models) == 100_000 and models[-1].name == "m99999:latest"
    # The loop ran all along: no stall near the whole parse (the stall was the whole parse).
    assert len(gaps) > 10 and max(gaps) < max(0.25, took / 4), (len(gaps), took)
