"""Async client for OpenAI-compatible servers: llama.cpp's llama-server, vLLM, SGLang, LM Studio,
LocalAI, and Ollama's own ``/v1``.

It shares :class:`~ometer_exporter.client.ollama.OllamaClient`'s plumbing (one keep-alive pool,
phased deadlines, the ``error_type`` mapping, the API-key redaction) and returns the same values
(``TagModel``, ``ShowInfo``, ``ChatStream``, ``EmbedResponse``), so the measurement and the loop
work through either. The URL is the base up to ``/v1``; engine probes go to the server's root.

* Discovery: ``/v1/models``; the engine and its metadata where it offers them — llama.cpp's
  ``/props`` (context size, slot count, build), vLLM's ``max_model_len`` (a LoRA adapter's is
  its ``parent``'s) and ``/version``, LM Studio's ``/api/v0/models`` (type, arch, format,
  quantization, the loaded or else the maximum context; LM Studio tells no version), Ollama's
  ``/api/version`` — and absent otherwise. A probe answered with an error, whatever its status
  (LM Studio answers an unknown route with 200 and ``{"error"}``), is not that engine.
* A chat is ``/v1/chat/completions`` streamed as server-sent events with
  ``stream_options: {include_usage: true}``: the first delta with content or reasoning is the
  first token; output tokens come from ``usage`` (or, absent that, llama.cpp's ``timings``, or the
  counted chunks, marked approximate); llama.cpp's ``timings`` give the server's prompt and decode
  times, the fields Ollama's done line gives.
* There is no ``/api/ps``: nothing is loaded or unloaded by the exporter (``ps`` lists nothing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from time import perf_counter
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from ometer_exporter.client.errors import (
    OllamaBadResponse,
    OllamaError,
    OllamaNotFound,
    OllamaStreamError,
    OllamaStreamIncomplete,
)
from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.client.replies import (
    MAX_INT,
    MAX_LABEL_CHARS,
    MAX_VERSION_CHARS,
    ChatStream,
    DoneFields,
    EmbedResponse,
    LoadedModel,
    ShowInfo,
    TagModel,
    clipped,
    label,
    model_name,
    parse_split_line,
    parse_tag,
)
from ometer_exporter.client.tally import ChatTally

CHAT_PATH: Final = "/chat/completions"
_NS_PER_MS: Final = 1_000_000
_MAX_MS: Final = 1e12  # 31 years in milliseconds: a longer server time is not a measurement
_MAX_ENTRIES: Final = 10_000  # of a model list read beside /v1/models


# vLLM's Prometheus gauges of requests in its engine (``/metrics``).
_VLLM_BUSY: Final = ("vllm:num_requests_running{", "vllm:num_requests_waiting{")


class OpenAIClient(OllamaClient):
    """One keep-alive connection pool to one OpenAI-compatible server (``base_url`` ends in /v1)."""

    api = "openai"

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        parts = urlsplit(base_url.rstrip("/"))
        root = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
        self._root = urlunsplit((parts.scheme, parts.netloc, root, "", ""))
        self.engine: str | None = None
        self.slots: int | None = None
        self.loaded_now: frozenset[str] | None = None  # LM Studio's state, at the last tags()
        self._context: int | None = None  # llama.cpp: the context each request gets (n_ctx)
        self._models: dict[str, ShowInfo] = {}

    # -- discovery ---------------------------------------------------------------------------

    async def version(self) -> str:
        """Which engine this is, and its version (probes at the server's root; a 4xx, an error
        body or a reply not of that engine moves to the next). No version known (LM Studio):
        :class:`OllamaNotFound`, ``engine`` set all the same."""
        self.engine, self.slots, self._context = "openai", None, None
        props = await self._probe("/props")
        if isinstance(props, dict) and (
            "default_generation_settings" in props or "total_slots" in props
        ):
            self.engine = "llama.cpp"
            self.slots = _positive(props.get("total_slots"))
            settings = props.get("default_generation_settings")
            if isinstance(settings, dict):
                self._context = _positive(settings.get("n_ctx"))
            return self._version_text(props.get("build_info"), "/props")
        for path, engine in (("/api/version", "ollama"), ("/version", "vllm")):
            reply = await self._probe(path)
            if isinstance(reply, dict) and isinstance(reply.get("version"), str):
                self.engine = engine
                return self._version_text(reply["version"], path)
        await self._lm_studio()  # LM Studio is known by its own model list, and has no version
        what = "LM Studio" if self.engine == "lmstudio" else "the engine"
        raise OllamaNotFound(f"{self._root}: {what} tells no version")

    async def tags(self) -> list[TagModel]:
        """The models ``/v1/models`` lists, with what the engine tells of each."""
        obj = await self._json("GET", "/models")
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
            raise OllamaBadResponse("/v1/models: expected an object with a 'data' list")
        self.loaded_now = None
        studio = await self._lm_studio() if self.engine in ("openai", "lmstudio") else {}
        if self.engine == "ollama":
            studio = await self._ollama_tags()
        self._models = {}
        out: list[TagModel] = []
        tags = await self._entries({"models": obj["data"]}, "/v1/models", _parse_model)
        lengths = {tag.name: tag.context_length for tag in tags}
        parents = _parents(obj["data"])
        for listed in tags:
            tag = replace(listed, **studio.get(listed.name, {}))
            parent = lengths.get(parents.get(tag.name, ""))
            context = tag.context_length or parent or self._context
            caps = tag.capabilities or ("completion",)
            self._models[tag.name] = ShowInfo(
                architecture=tag.family or None, parameter_count=None, context_length=context,
                embedding_length=tag.embedding_length, capabilities=caps,
            )  # fmt: skip
            out.append(replace(tag, context_length=context, capabilities=caps))
        return out

    async def show(self, model: str) -> ShowInfo:
        """What discovery learnt of the model (no request: these servers have no show)."""
        info = self._models.get(model)
        if info is None:
            raise OllamaNotFound(f"/v1/models: {self._safe(model)!r} is not listed")
        return info

    async def ps(self) -> list[LoadedModel]:
        """Nothing: an OpenAI-compatible server does not say what it has loaded."""
        return []

    async def unload(self, model: str, *, embedding: bool = False) -> None:
        """Nothing: the exporter never loads a model on these servers."""

    async def busy(self) -> bool | None:
        """Whether the server is serving a request now: llama.cpp's ``/slots`` (a slot
        ``is_processing``), vLLM's ``/metrics`` (``vllm:num_requests_running`` or ``_waiting``
        above 0). None on other engines, or when the server does not say (llama-server with
        ``--no-slots``)."""
        if self.engine == "vllm":
            return await self._vllm_busy()
        if self.engine != "llama.cpp":
            return None
        slots = await self._probe("/slots")
        if not isinstance(slots, list):
            return None
        return any(isinstance(s, dict) and s.get("is_processing") is True for s in slots[:4096])

    async def _vllm_busy(self) -> bool | None:
        try:
            text = (await self._raw("GET", self._root + "/metrics")).decode("utf-8", "replace")
        except OllamaError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return None
            raise
        found = False
        for line in text.splitlines():
            if line.startswith(_VLLM_BUSY):
                found = True
                value = line.rpartition(" ")[2]
                try:
                    if float(value) > 0:
                        return True
                except ValueError:
                    continue
        return False if found else None

    async def _lm_studio(self) -> dict[str, dict[str, Any]]:
        """LM Studio's ``/api/v0/models``: what each model is (the :class:`TagModel` fields it
        fills), or nothing on another engine."""
        reply = await self._probe("/api/v0/models")
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list):
            return {}
        self.engine = "lmstudio"
        out: dict[str, dict[str, Any]] = {}
        loaded: set[str] = set()
        for entry in data[:_MAX_ENTRIES]:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                out[entry["id"]] = _studio_fields(entry, self._safe)
                if entry.get("state") == "loaded":
                    loaded.add(entry["id"])
        self.loaded_now = frozenset(loaded)
        return out

    async def _ollama_tags(self) -> dict[str, dict[str, Any]]:
        """Ollama behind /v1: its /api/tags says which models embed (they cannot chat)."""
        try:
            reply = await self._json("GET", self._root + "/api/tags")
            tags = await self._entries(reply, "/api/tags", parse_tag)
        except OllamaError:
            return {}
        return {t.name: {"capabilities": t.capabilities} for t in tags}

    async def _probe(self, path: str) -> Any:
        """A JSON reply from the server's root, or None where that engine is not (4xx, not JSON,
        an ``{"error"}`` body). A server that cannot be reached is down: that error is raised."""
        try:
            reply = await self._json("GET", self._root + path)
        except OllamaError as exc:
            if exc.status is not None and (400 <= exc.status < 500 or exc.status == 501):
                return None
            if isinstance(exc, OllamaBadResponse):
                return None
            raise
        return None if isinstance(reply, dict) and "error" in reply else reply

    def _version_text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise OllamaNotFound(f"{where}: no version in the reply")
        return self._safe(clipped(value, MAX_VERSION_CHARS))

    # -- requests ----------------------------------------------------------------------------

    async def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        options: dict[str, Any],
        think: bool | None = None,
        keep_alive: float | None = None,
    ) -> ChatStream:
        """Stream one chat completion. ``options`` are Ollama's names (temperature, seed,
        num_predict -> max_tokens); ``think`` and ``keep_alive`` have no OpenAI equivalent."""
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for ours, theirs in (("temperature", "temperature"), ("seed", "seed")):
            if ours in options:
                body[theirs] = options[ours]
        if "num_predict" in options:
            body["max_tokens"] = options["num_predict"]
        return await self._stream_chat(json.dumps(body).encode(), CHAT_PATH)

    def _tally(self) -> ChatTally:
        return _EventTally(self._safe)

    async def embed(
        self, model: str, inputs: list[str], *, keep_alive: float | None = None
    ) -> EmbedResponse:
        sent_at = perf_counter()
        obj = await self._json("POST", "/embeddings", {"model": model, "input": inputs})
        ended_at = perf_counter()
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, list):
            raise OllamaBadResponse("/v1/embeddings: no data list in the reply")
        first = data[0].get("embedding") if data and isinstance(data[0], dict) else None
        usage = obj.get("usage")
        prompt = (
            _count(usage, "prompt_tokens", "/v1/embeddings") if isinstance(usage, dict) else None
        )
        if prompt == 0 and any(inputs):
            prompt = None  # LM Studio counts none: text was read, so 0 is not a count
        return EmbedResponse(
            sent_at=sent_at,
            ended_at=ended_at,
            embeddings=len(data),
            dimensions=len(first) if isinstance(first, list) else None,
            done=DoneFields(prompt_eval_count=prompt),
        )


def _parse_model(entry: Any) -> TagModel:
    where = "/v1/models"
    if not isinstance(entry, dict):
        raise OllamaBadResponse(f"{where}: a model entry is not an object")
    name = model_name(entry.get("id"), where)
    meta = entry.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    context = _positive(entry.get("max_model_len"))  # vLLM
    return TagModel(
        name=name, size=_positive(meta.get("size")), digest="", modified_at=None, format="",
        family="",  # owned_by is an owner ("llamacpp", "library"), not a model family
        families=(), parameter_size=_parameter_size(_positive(meta.get("n_params"))),
        quantization_level="", context_length=context,
        embedding_length=_positive(meta.get("n_embd")), capabilities=None, remote_host=None,
        remote_model=None,
    )  # fmt: skip


def _parents(data: list[Any]) -> dict[str, str]:
    """vLLM's LoRA adapters: each adapter's base model (``parent``), whose context it has."""
    return {
        entry["id"]: entry["parent"]
        for entry in data[:_MAX_ENTRIES]
        if isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and isinstance(entry.get("parent"), str)
    }


def _studio_fields(entry: dict[str, Any], safe: Callable[[object], str]) -> dict[str, Any]:
    """One ``/api/v0/models`` entry as :class:`TagModel` fields: ``arch`` is the family (as
    Ollama's), ``compatibility_type`` the format; the context a loaded model runs with
    (``loaded_context_length``), else the most it can have; ``type`` and ``capabilities`` in
    Ollama's capability names."""
    kind = entry.get("type")
    listed = entry.get("capabilities")
    tools = isinstance(listed, list) and "tool_use" in listed
    caps: tuple[str, ...] = ("embedding",) if kind == "embeddings" else ("completion",)
    caps += ("vision",) if kind == "vlm" else ()
    caps += ("tools",) if tools and kind != "embeddings" else ()
    fields: dict[str, Any] = {"capabilities": caps}
    for ours, theirs in (
        ("family", "arch"), ("format", "compatibility_type"), ("quantization_level", "quantization")
    ):  # fmt: skip
        if text := label(entry, theirs):
            fields[ours] = safe(text)
    loaded = _positive(entry.get("loaded_context_length"))
    context = loaded or _positive(entry.get("max_context_length"))
    if context is not None:
        fields["context_length"] = context
    return fields


def _parameter_size(count: int | None) -> str:
    """llama.cpp's parameter count in Ollama's form (``"268.10M"``, ``"8.03B"``)."""
    if count is None:
        return ""
    return f"{count / 1e9:.2f}B" if count >= 10**9 else f"{count / 1e6:.2f}M"


def _positive(value: Any) -> int | None:
    """A size or count a server offers as metadata: unknown (None) unless a positive int64."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_INT:
        return None
    return value


def _count(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise OllamaBadResponse(f"{where}: field {key!r} is not an integer from 0 to 2**63-1")
    return value


def _milliseconds(obj: dict[str, Any], key: str, where: str) -> int | None:
    """llama.cpp's float milliseconds as Ollama's integer nanoseconds."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OllamaBadResponse(f"{where}: field {key!r} is not a number of milliseconds")
    if not (math.isfinite(value) and 0 <= value <= _MAX_MS):
        raise OllamaBadResponse(f"{where}: field {key!r} is out of range")
    return round(value * _NS_PER_MS)


class _EventTally(ChatTally):
    """What a chat completion's server-sent events have told so far."""

    __slots__ = ("_ended", "_reason", "_timings", "_usage")

    _WHERE: Final = "/v1/chat/completions"

    def __init__(self, safe: Callable[[object], str]) -> None:
        super().__init__(safe)
        self._usage: dict[str, Any] = {}
        self._timings: dict[str, Any] = {}
        self._reason: str | None = None
        self._ended = False  # data: [DONE]

    def feed(self, data: bytes, now: float) -> None:
        try:
            lines = self._splitter.feed(data)
        except OllamaBadResponse as exc:
            raise OllamaBadResponse(str(exc).replace("/api/chat", self._WHERE)) from None
        for line in lines:
            line = line.rstrip("\r")
            if not line.startswith("data:"):
                continue  # blank separators, comments (":"), event and id fields
            payload = line[5:].strip()
            if payload == "[DONE]":
                self._ended = True
                continue
            if self._ended:
                continue
            try:
                obj = parse_split_line(payload)
            except OllamaBadResponse as exc:
                raise OllamaBadResponse(str(exc).replace("/api/chat", self._WHERE)) from None
            if obj is not None:
                self._event(obj, now)

    def _event(self, obj: dict[str, Any], now: float) -> None:
        if "error" in obj:
            error = obj["error"]
            text = error.get("message", error) if isinstance(error, dict) else error
            raise OllamaStreamError(f"{self._WHERE}: error during the stream: {self._safe(text)}")
        if isinstance(obj.get("usage"), dict):
            self._usage = obj["usage"]
        if isinstance(obj.get("timings"), dict):
            self._timings = obj["timings"]
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if content or reasoning:
                if self.first_token_at is None:
                    self.first_token_at = now
                self.last_token_at = now
                if content:
                    self.content_chunks += 1
                    if self.first_content_at is None:
                        self.first_content_at = now
                else:
                    self.thinking_chunks += 1
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self._reason = clipped(reason, MAX_LABEL_CHARS)

    def stream(self, sent_at: float, headers_at: float, ended_at: float) -> ChatStream:
        if self._splitter.pending.strip():
            raise OllamaStreamIncomplete(f"{self._WHERE}: the stream ended inside a line")
        if not self._ended:
            raise OllamaStreamIncomplete(f"{self._WHERE}: the stream ended without data: [DONE]")
        self.done = self._done_fields()
        return super().stream(sent_at, headers_at, ended_at)

    def _done_fields(self) -> DoneFields:
        where, usage, timings = self._WHERE, self._usage, self._timings
        # The server's counts go with its times (timings), else usage, else the chunks counted.
        output = _count(timings, "predicted_n", where)
        if output is None:
            output = _count(usage, "completion_tokens", where)
        approximate = output is None
        if output is None:
            output = self.content_chunks + self.thinking_chunks  # one token a chunk, mostly
        prompt = _count(timings, "prompt_n", where)
        if prompt is None:
            prompt = _count(usage, "prompt_tokens", where)
        return DoneFields(
            done_reason=self._reason,
            prompt_eval_count=prompt,
            prompt_eval_duration=_milliseconds(timings, "prompt_ms", where),
            eval_count=output,
            eval_duration=_milliseconds(timings, "predicted_ms", where),
            eval_count_approximate=approximate,
        )
