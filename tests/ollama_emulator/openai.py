"""The OpenAI-compatible API of the emulator: Ollama's own ``/v1`` (``engine="ollama"``), or a
llama.cpp ``llama-server`` (``engine="llama.cpp"``), written from the public API references:

* OpenAI's chat completions streaming: ``data: <chunk>`` server-sent events, each a
  ``chat.completion.chunk`` with ``choices[0].delta``; ``stream_options.include_usage`` adds a last
  chunk whose ``choices`` is empty and which carries ``usage``; the stream ends with
  ``data: [DONE]``. Errors are ``{"error": {"message", "type", "param", "code"}}``.
* Ollama (its docs' "OpenAI compatibility"): ``/v1/models`` (``owned_by`` the namespace,
  ``library``), ``/v1/chat/completions`` translated to a chat request (``max_tokens`` ->
  ``num_predict``, ``temperature``, ``seed``), thinking streamed as ``delta.reasoning``,
  ``/v1/embeddings``. The same generation as ``/api/chat`` serves it, so the two APIs give the
  same numbers up to the wire.
* llama.cpp's server README: ``/props`` (``default_generation_settings.n_ctx``, ``total_slots``,
  ``build_info``), ``/health``, ``/slots`` (``is_processing`` per slot), ``/v1/models`` with
  ``owned_by: llamacpp`` and ``meta``; a first chunk with only ``delta.role``; ``timings``
  (``prompt_n``, ``prompt_ms``, ``predicted_n``, ``predicted_ms`` and the derived rates) beside
  ``usage``; reasoning as ``delta.reasoning_content``; no ``/api/*``.

Ground truth is the same :class:`RequestRecord` per request (path ``/v1/chat/completions``).
With ``close_reused=True`` the emulator closes a kept-alive connection that carried a streamed
completion when the next request arrives on it, before any response byte, as llama-server does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .wire import go_json

if TYPE_CHECKING:
    from .server import OllamaEmulator, _Ctx

SSE = "text/event-stream"
LLAMA_BUILD = "b7000-emulated"
OPENAI_PATHS = frozenset({"/v1/models", "/v1/chat/completions", "/v1/embeddings"})
LLAMA_PATHS = frozenset({"/props", "/health", "/slots"})


def error_body(message: str, status: int, *, llama: bool = False) -> bytes:
    """OpenAI's error object (llama.cpp's has the status as its code and no param)."""
    kind = {
        400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
        503: "unavailable_error",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")  # fmt: skip
    error: dict[str, Any] = {"message": message, "type": kind, "param": None, "code": None}
    if llama:
        error = {"message": message, "type": kind, "code": status}
    return go_json({"error": error}).encode()


def models_body(emu: OllamaEmulator) -> dict[str, Any]:
    created = int(time.time())
    data: list[dict[str, Any]] = []
    for m in emu._models.values():
        if emu.engine == "llama.cpp":
            meta = {
                "vocab_type": 2, "n_vocab": 262144, "n_ctx_train": m.context_length,
                "n_embd": m.embedding_length, "n_params": m.parameter_count, "size": m.size,
            }  # fmt: skip
            data.append({"id": m.name, "object": "model", "created": created,
                         "owned_by": "llamacpp", "meta": meta})  # fmt: skip
        else:
            owner = m.name.split("/")[0] if "/" in m.name else "library"
            data.append({"id": m.name, "object": "model", "created": created, "owned_by": owner})
    return {"object": "list", "data": data}


def props_body(emu: OllamaEmulator) -> dict[str, Any]:
    m = next(iter(emu._models.values()))
    return {
        "default_generation_settings": {"n_ctx": emu.default_num_ctx, "params": {"seed": -1}},
        "total_slots": emu.num_parallel,
        "model_path": f"/models/{m.name}.gguf",
        "chat_template": "",
        "build_info": emu.build,
    }


def slots_body(emu: OllamaEmulator) -> list[dict[str, Any]]:
    """llama.cpp's ``/slots``: one entry per parallel slot, ``is_processing`` while a request
    holds it (the first ones, as many as requests are in flight)."""
    busy = sum(state.in_flight for state in emu.loaded().values())
    return [
        {"id": i, "id_task": -1, "n_ctx": emu.default_num_ctx, "is_processing": i < busy}
        for i in range(emu.num_parallel)
    ]


def chat_request(body: Any) -> dict[str, Any]:
    """An OpenAI chat completion request as the Ollama chat request it runs as."""
    if not isinstance(body, dict):
        return {}
    options: dict[str, Any] = {}
    for theirs, ours in (("temperature", "temperature"), ("seed", "seed"), ("top_p", "top_p")):
        if body.get(theirs) is not None:
            options[ours] = body[theirs]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        options["num_predict"] = limit
    out: dict[str, Any] = {
        "model": body.get("model", ""),
        "messages": body.get("messages") or [],
        "stream": bool(body.get("stream", False)),
        "options": options,
    }
    return out


def include_usage(body: Any) -> bool:
    opts = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(opts, dict) and opts.get("include_usage") is True


class EventWriter:
    """The SSE form of one generation's chunks (``server._Generation`` calls it)."""

    def __init__(self, emu: OllamaEmulator, ctx: _Ctx, name: str, usage: bool) -> None:
        self.llama = emu.engine == "llama.cpp"
        self.usage = usage
        self.name = name
        self.id = f"chatcmpl-{len(emu.records)}"
        self.fingerprint = emu.build if self.llama else "fp_ollama"
        self.ctx = ctx

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": self.name, "system_fingerprint": self.fingerprint, "choices": choices,
        }  # fmt: skip
        obj.update(extra)
        return b"data: " + go_json(obj).encode() + b"\n\n"

    def opening(self) -> bytes:
        """llama.cpp's first chunk: the role alone, before any token (Ollama sends none)."""
        if not self.llama:
            return b""
        delta = {"role": "assistant", "content": None}
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def token(self, text: str, thinking: bool) -> bytes:
        if self.llama:
            delta: dict[str, Any] = {"reasoning_content": text} if thinking else {"content": text}
        else:
            delta = {"role": "assistant", "content": "" if thinking else text}
            if thinking:
                delta["reasoning"] = text
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def final(self, reason: str, metrics: dict[str, int]) -> bytes:
        prompt, output = metrics.get("prompt_eval_count", 0), metrics.get("eval_count", 0)
        usage = {"completion_tokens": output, "prompt_tokens": prompt,
                 "total_tokens": prompt + output}  # fmt: skip
        if self.llama:  # usage and timings ride on the usage chunk, or on the last one without
            timings = _timings(metrics)
            extra: dict[str, Any] = {} if self.usage else {"timings": timings}
            end = self._chunk([{"finish_reason": reason, "index": 0, "delta": {}}], **extra)
            if self.usage:
                end += self._chunk([], usage=usage, timings=timings)
        else:
            delta = {"role": "assistant", "content": ""}
            end = self._chunk([{"index": 0, "delta": delta, "finish_reason": reason}])
            if self.usage:
                end += self._chunk([], usage=usage)
        return end + b"data: [DONE]\n\n"


def _timings(metrics: dict[str, int]) -> dict[str, float | int]:
    prompt_n, output_n = metrics.get("prompt_eval_count", 0), metrics.get("eval_count", 0)
    prompt_ms = metrics.get("prompt_eval_duration", 0) / 1e6
    predicted_ms = metrics.get("eval_duration", 0) / 1e6
    return {
        "cache_n": 0,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
        "prompt_per_second": prompt_n / prompt_ms * 1e3 if prompt_ms else 0.0,
        "predicted_n": output_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / output_n if output_n else 0.0,
        "predicted_per_second": output_n / predicted_ms * 1e3 if predicted_ms else 0.0,
    }


def embeddings_body(name: str, vectors: list[Any], prompt_tokens: int) -> dict[str, Any]:
    data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": name, "usage": usage}
