"""The OpenAI-compatible API of the emulator, as each engine serves it (``engine=``):

* ``"ollama"``: Ollama's own ``/v1`` beside its ``/api``;
* ``"llama.cpp"``: a ``llama-server``;
* ``"vllm"``: vLLM's OpenAI-compatible server (``vllm serve``);
* ``"lmstudio"``: LM Studio's server.

Written from the public references named below (read to learn, nothing copied). Every mode runs
the same generation as ``/api/chat`` (load, prefill and decode pacing, slots, batching, faults)
and writes the same ground-truth :class:`RequestRecord` per request (path
``/v1/chat/completions``), so the engines differ only on the wire:

* OpenAI's chat completions streaming (its API reference): ``data: <chunk>`` server-sent events,
  each a ``chat.completion.chunk`` with ``choices[0].delta``; ``stream_options.include_usage``
  adds a last chunk whose ``choices`` is empty and which carries ``usage``; the stream ends with
  ``data: [DONE]``. Errors are ``{"error": {"message", "type", "param", "code"}}``.
* Ollama (its docs' "OpenAI compatibility"): ``/v1/models`` (``owned_by`` the namespace,
  ``library``), ``/v1/chat/completions`` translated to a chat request (``max_tokens`` ->
  ``num_predict``, ``temperature``, ``seed``), thinking streamed as ``delta.reasoning``,
  ``/v1/embeddings``.
* llama.cpp's server README: ``/props`` (``default_generation_settings.n_ctx``, ``total_slots``,
  ``build_info``), ``/health``, ``/slots`` (``is_processing`` per slot), ``/v1/models`` with
  ``owned_by: llamacpp`` and ``meta``; a first chunk with only ``delta.role``; ``timings``
  (``prompt_n``, ``prompt_ms``, ``predicted_n``, ``predicted_ms`` and the derived rates) beside
  ``usage``; reasoning as ``delta.reasoning_content``; no ``/api/*`` (404 ``File Not Found``).
* vLLM (``vllm/entrypoints/openai/api_server.py`` and the protocol models of
  ``vllm/entrypoints/openai/protocol.py``, later ``engine/protocol.py``; its serving code for
  chat and models; its Prometheus metrics): ``/version`` (``{"version"}``, the emulator's
  ``version``), ``/health`` (200, empty body), ``/metrics`` (``vllm:num_requests_running`` and
  ``vllm:num_requests_waiting`` per ``model_name``); ``/v1/models`` of ``ModelCard`` entries
  (``owned_by: vllm``, ``root``,
  ``parent``, ``max_model_len``, ``permission``): the first model is the served base model,
  ``max_model_len`` its context (``default_num_ctx`` capped at the model's); the others are
  listed as LoRA adapters on it, ``parent`` the base and no ``max_model_len``, as vLLM lists
  adapters. A stream opens with ``delta: {role, content: ""}``; tokens are ``delta.content``,
  reasoning ``delta.reasoning``; ``finish_reason`` (with ``stop_reason``) rides on the last
  token's chunk; no ``system_fingerprint``, no ``timings``. A model is known by its exact id
  (404 ``The model `x` does not exist.``); a prompt whose tokens plus ``max_tokens`` exceed
  ``max_model_len`` is refused (400) before generation. Errors carry the HTTP status as
  ``code`` and a type such as ``NotFoundError``; ``--api-key`` guards only ``/v1/*`` and answers
  ``{"error": "Unauthorized"}``; unknown routes are FastAPI's 404 ``{"detail": "Not Found"}``.
* LM Studio (its developer docs: "OpenAI Compatibility Endpoints", "REST API v0", the API
  changelog; its bug tracker for wire samples): ``/v1/models`` lists every downloaded model
  (just-in-time loading on, the default; ``owned_by: organization_owner``); ``/api/v0/models``
  tells each model's ``type`` (``llm``, ``vlm`` for a vision model, ``embeddings``),
  ``publisher``, ``arch`` (the family), ``compatibility_type`` (the format), ``quantization``,
  ``state`` (``loaded`` | ``not-loaded``), ``max_context_length`` (the model's),
  ``loaded_context_length`` (the context it runs with, when loaded) and ``capabilities``
  (``tool_use``). Models are loaded at start (as by a user); one that is unloaded
  (:meth:`OllamaEmulator.unload`) is loaded by its next request, with its ``load_seconds``,
  and unloads again after ``default_keep_alive`` (JIT loading and its idle TTL). Every delta
  repeats ``role``; reasoning is ``delta.reasoning_content``; the finish chunk has
  ``delta: {}``; every choice has ``logprobs: null``; ``system_fingerprint`` is the model id;
  usage as OpenAI's (0.3.18+). An unknown model is 404 ``model_not_found`` listing the models;
  a key (0.4's API tokens) guards every route; an embedding's ``usage`` counts 0 prompt tokens,
  as the docs show; an unknown route or method answers **200** with ``{"error": "Unexpected
  endpoint or method. (GET /x)"}``, as LM Studio does.

With ``close_reused=True`` the emulator closes a kept-alive connection that carried a streamed
completion when the next request arrives on it, before any response byte, as llama-server does.
"""

from __future__ import annotations

import json
import secrets
import string
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .models import display_name
from .text import chat_prompt_tokens
from .wire import go_json

if TYPE_CHECKING:
    from .models import EmulatedModel
    from .server import OllamaEmulator, _Ctx

ENGINES = ("ollama", "llama.cpp", "vllm", "lmstudio")
SSE = "text/event-stream"
LLAMA_BUILD = "b7000-emulated"
OPENAI_PATHS = frozenset({"/v1/models", "/v1/chat/completions", "/v1/embeddings"})
# Each engine's own routes beside /v1 (Ollama's /api/* are the emulator's native routes).
OWN_PATHS = {
    "ollama": frozenset(),
    "llama.cpp": frozenset({"/props", "/health", "/slots"}),
    "vllm": frozenset({"/version", "/health", "/metrics"}),
    "lmstudio": frozenset({"/api/v0/models"}),
}
_STUDIO_ID = string.ascii_lowercase + string.digits


def serves(engine: str, path: str) -> bool:
    """Whether ``path`` is one of this engine's OpenAI-compatible or own routes."""
    return path in OPENAI_PATHS or path in OWN_PATHS[engine]


def needs_key(engine: str, path: str) -> bool:
    """Whether an API key guards ``path`` (llama.cpp leaves /health open, vLLM all but /v1)."""
    if engine == "vllm":
        return path.startswith("/v1")
    return not (engine == "llama.cpp" and path == "/health")


def encode(engine: str, obj: Any) -> bytes:
    """A JSON body as the engine writes it: Go's encoder (Ollama, and llama.cpp's compact form),
    Python's (vLLM) or JavaScript's (LM Studio), the last two compact and unescaped."""
    if engine in ("vllm", "lmstudio"):
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return go_json(obj).encode()


# -- errors ------------------------------------------------------------------------------------


def error_body(engine: str, message: str, status: int) -> bytes:
    """The engine's error object for an HTTP error."""
    if engine == "vllm":
        if status == 401:
            return encode(engine, {"error": "Unauthorized"})
        kind = _status_error(status)
        param = "model" if status == 404 else None
        error = {"message": message, "type": kind, "param": param, "code": status}
        return encode(engine, {"error": error})
    if engine == "lmstudio":
        if status == 401:
            message = (
                "An LM Studio API token is required to make requests to this server, but none "
                "was provided using the Authorization header using the 'Bearer' scheme."
            )
            auth = {"type": "invalid_request", "code": "invalid_api_key", "message": message}
            return encode(engine, {"error": auth})
        code = "model_not_found" if status == 404 else None
        error = {"message": message, "type": "invalid_request_error",
                 "param": "model" if code else None, "code": code}  # fmt: skip
        return encode(engine, {"error": error})
    kind = {
        400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
        503: "unavailable_error",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")  # fmt: skip
    if engine == "llama.cpp":  # the status as its code, no param
        return go_json({"error": {"message": message, "type": kind, "code": status}}).encode()
    error = {"message": message, "type": kind, "param": None, "code": None}
    return go_json({"error": error}).encode()


def _status_error(status: int) -> str:
    """vLLM's error type: the status phrase as an exception name (``NotFoundError``)."""
    try:
        phrase = HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        phrase = "Server"
    return phrase if phrase.endswith("Error") else phrase + "Error"


def unknown_route(engine: str, method: str, path: str) -> tuple[int, bytes]:
    """What a non-Ollama engine answers on a route it does not have (``/api/tags``, …)."""
    if engine == "vllm":
        return 404, encode(engine, {"detail": "Not Found"})
    if engine == "lmstudio":  # LM Studio answers 200 anyway (and logs an error)
        return 200, encode(engine, {"error": f"Unexpected endpoint or method. ({method} {path})"})
    return 404, error_body(engine, "File Not Found", 404)


def refusal(emu: OllamaEmulator, body: Any) -> tuple[int, str] | None:
    """vLLM's and LM Studio's own checks of a request before it reaches the model: the model
    by its exact id, and (vLLM) the prompt and ``max_tokens`` against ``max_model_len``."""
    if emu.engine not in ("vllm", "lmstudio"):
        return None
    name = str(body.get("model", "")) if isinstance(body, dict) else ""
    names = [m.name for m in emu._models.values()]
    if name not in names:
        if emu.engine == "vllm":
            return 404, f"The model `{name}` does not exist."
        listed = "\n".join(names)
        return 404, (
            f'Model "{name}" not found. Please specify a valid model.\n\nYour models:\n\n{listed}'
        )
    if emu.engine == "lmstudio" or not isinstance(body, dict):
        return None
    prompt = len(chat_prompt_tokens(_messages(body)))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    output = limit if isinstance(limit, int) and not isinstance(limit, bool) else 0
    context = max_model_len(emu)
    if prompt + output > context:
        return 400, (
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt + output} tokens ({prompt} in the messages, {output} in the completion). "
            "Please reduce the length of the messages or completion."
        )
    return None


def _messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    raw = body.get("messages")
    items = raw if isinstance(raw, list) else []
    return [
        (str(m.get("role", "")).lower(), str(m.get("content", "")))
        for m in items
        if isinstance(m, dict)
    ]


# -- discovery ---------------------------------------------------------------------------------


def info_reply(emu: OllamaEmulator, path: str) -> bytes | None:
    """The body of a discovery route of this engine (None: not one)."""
    engine = emu.engine
    if path == "/health":
        return b"" if engine == "vllm" else go_json({"status": "ok"}).encode()
    if path == "/props":
        return go_json(props_body(emu)).encode()
    if path == "/slots":
        return go_json(slots_body(emu)).encode()
    if path == "/version":
        return encode(engine, {"version": emu.version})
    if path == "/metrics":
        return vllm_metrics(emu)
    if path == "/api/v0/models":
        return encode(engine, studio_models_body(emu))
    if path == "/v1/models":
        return encode(engine, models_body(emu))
    return None


def vllm_metrics(emu: OllamaEmulator) -> bytes:
    """vLLM's ``/metrics`` (Prometheus text), the part a client reads to tell the server is
    busy: requests in the engine, running and waiting for a slot, per served model."""
    states = emu.loaded()
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
    ]
    waiting = ["# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
               "# TYPE vllm:num_requests_waiting gauge"]  # fmt: skip
    for model in emu._models.values():
        state = states.get(display_name(model.name))
        in_flight = state.in_flight if state is not None else 0
        running = min(in_flight, emu.num_parallel)
        labels = f'{{engine="0",model_name="{model.name}"}}'
        lines.append(f"vllm:num_requests_running{labels} {float(running)}")
        waiting.append(f"vllm:num_requests_waiting{labels} {float(in_flight - running)}")
    return ("\n".join(lines + waiting) + "\n").encode()


def max_model_len(emu: OllamaEmulator) -> int:
    """vLLM's context: the served base model's (the first) runner context."""
    base = next(iter(emu._models.values()))
    return int(emu._runner_options(base, {})["num_ctx"])


def models_body(emu: OllamaEmulator) -> dict[str, Any]:
    created = int(time.time())
    data: list[dict[str, Any]] = []
    models = list(emu._models.values())
    for index, m in enumerate(models):
        if emu.engine == "llama.cpp":
            meta = {
                "vocab_type": 2, "n_vocab": 262144, "n_ctx_train": m.context_length,
                "n_embd": m.embedding_length, "n_params": m.parameter_count, "size": m.size,
            }  # fmt: skip
            data.append({"id": m.name, "object": "model", "created": created,
                         "owned_by": "llamacpp", "meta": meta})  # fmt: skip
        elif emu.engine == "vllm":
            data.append(_model_card(emu, m, models[0].name if index else None, created))
        elif emu.engine == "lmstudio":
            data.append({"id": m.name, "object": "model", "owned_by": "organization_owner"})
        else:
            owner = m.name.split("/")[0] if "/" in m.name else "library"
            data.append({"id": m.name, "object": "model", "created": created, "owned_by": owner})
    if emu.engine == "lmstudio":
        return {"data": data, "object": "list"}
    return {"object": "list", "data": data}


def _model_card(
    emu: OllamaEmulator, m: EmulatedModel, parent: str | None, created: int
) -> dict[str, Any]:
    """vLLM's ``ModelCard``: the base model with its ``max_model_len``, or a LoRA adapter."""
    permission = {
        "id": f"modelperm-{secrets.token_hex(16)}", "object": "model_permission",
        "created": created, "allow_create_engine": False, "allow_sampling": True,
        "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
        "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
    }  # fmt: skip
    return {
        "id": m.name, "object": "model", "created": created, "owned_by": "vllm",
        "root": f"/adapters/{m.name}" if parent else f"/models/{m.name}", "parent": parent,
        "max_model_len": None if parent else max_model_len(emu), "permission": [permission],
    }  # fmt: skip


def studio_models_body(emu: OllamaEmulator) -> dict[str, Any]:
    """LM Studio's ``/api/v0/models``: every downloaded model, loaded or not."""
    loaded = emu.loaded()
    data: list[dict[str, Any]] = []
    for m in emu._models.values():
        state = loaded.get(display_name(m.name))
        ready = state is not None and not state.loading
        kind = "embeddings" if m.is_embedding else "vlm" if "vision" in m.capabilities else "llm"
        entry: dict[str, Any] = {
            "id": m.name, "object": "model", "type": kind, "publisher": "lmstudio-community",
            "arch": m.family, "compatibility_type": m.format,
            "quantization": m.quantization_level, "state": "loaded" if ready else "not-loaded",
            "max_context_length": m.context_length,
        }  # fmt: skip
        if ready and state is not None:
            entry["loaded_context_length"] = state.context_length
        if "tools" in m.capabilities:
            entry["capabilities"] = ["tool_use"]
        data.append(entry)
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


# -- requests ----------------------------------------------------------------------------------


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


def stream_error(message: str) -> bytes:
    """An error in the middle of a stream, as the OpenAI-compatible servers send one: an event
    whose data is an error object (OpenAI's shape), then the end of the stream."""
    error = {"message": message, "type": "server_error", "param": None, "code": 500}
    return f"data: {go_json({'error': error})}\n\ndata: [DONE]\n\n".encode()


def include_usage(body: Any) -> bool:
    opts = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(opts, dict) and opts.get("include_usage") is True


def _completion_id(engine: str) -> str:
    if engine == "vllm":
        return f"chatcmpl-{secrets.token_hex(16)}"
    if engine == "lmstudio":
        return "chatcmpl-" + "".join(secrets.choice(_STUDIO_ID) for _ in range(21))
    return ""


class EventWriter:
    """The SSE form of one generation's chunks, in the engine's dialect
    (``server._Generation`` calls it)."""

    def __init__(self, emu: OllamaEmulator, ctx: _Ctx, name: str, usage: bool) -> None:
        self.engine = emu.engine
        self.usage = usage
        self.name = name
        self.id = _completion_id(self.engine) or f"chatcmpl-{len(emu.records)}"
        prints = {"ollama": "fp_ollama", "llama.cpp": emu.build, "lmstudio": name}
        self.fingerprint: str | None = prints.get(self.engine)  # vLLM sends none
        self.finished = False  # vLLM: the last token's chunk carried finish_reason
        self.ctx = ctx

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": self.name,
        }  # fmt: skip
        if self.fingerprint is not None:
            obj["system_fingerprint"] = self.fingerprint
        obj["choices"] = choices
        obj.update(extra)
        return b"data: " + encode(self.engine, obj) + b"\n\n"

    def _choice(self, delta: dict[str, Any], finish: str | None) -> list[dict[str, Any]]:
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if self.engine in ("vllm", "lmstudio"):
            choice["logprobs"] = None
        choice["finish_reason"] = finish
        if self.engine == "vllm" and finish is not None:
            choice["stop_reason"] = None
        return [choice]

    def opening(self) -> bytes:
        """llama.cpp's and vLLM's first chunk: the role alone, before any token."""
        if self.engine == "llama.cpp":
            return self._chunk(self._choice({"role": "assistant", "content": None}, None))
        if self.engine == "vllm":
            return self._chunk(self._choice({"role": "assistant", "content": ""}, None))
        return b""

    def token(self, text: str, thinking: bool, finish: str | None = None) -> bytes:
        """One token's chunk; ``finish``: the done reason when it is the last token."""
        delta: dict[str, Any]
        if self.engine == "ollama":
            delta = {"role": "assistant", "content": "" if thinking else text}
            if thinking:
                delta["reasoning"] = text
        elif self.engine == "llama.cpp":
            delta = {"reasoning_content": text} if thinking else {"content": text}
        elif self.engine == "vllm":
            delta = {"reasoning": text} if thinking else {"content": text}
            self.finished = finish is not None
            return self._chunk(self._choice(delta, finish))
        else:
            delta = {"role": "assistant", "reasoning_content" if thinking else "content": text}
        return self._chunk(self._choice(delta, None))

    def final(self, reason: str, metrics: dict[str, int]) -> bytes:
        prompt, output = metrics.get("prompt_eval_count", 0), metrics.get("eval_count", 0)
        usage = {"completion_tokens": output, "prompt_tokens": prompt,
                 "total_tokens": prompt + output}  # fmt: skip
        if self.engine == "vllm":
            usage = {"prompt_tokens": prompt, "total_tokens": prompt + output,
                     "completion_tokens": output}  # fmt: skip
        elif self.engine == "lmstudio":
            usage = {"prompt_tokens": prompt, "completion_tokens": output,
                     "total_tokens": prompt + output}  # fmt: skip
        end = b""
        if self.engine == "llama.cpp":  # usage and timings ride on the usage chunk, or on the last
            timings = _timings(metrics)
            extra: dict[str, Any] = {} if self.usage else {"timings": timings}
            end = self._chunk(self._choice({}, reason), **extra)
            if self.usage:
                end += self._chunk([], usage=usage, timings=timings)
            return end + b"data: [DONE]\n\n"
        if not self.finished:
            delta = {"ollama": {"role": "assistant", "content": ""}, "vllm": {"content": ""}}
            end = self._chunk(self._choice(delta.get(self.engine, {}), reason))
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


def embeddings_body(engine: str, name: str, vectors: list[Any], prompt_tokens: int) -> bytes:
    """``/v1/embeddings``' reply; LM Studio counts no prompt tokens there (its docs show 0)."""
    data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    counted = 0 if engine == "lmstudio" else prompt_tokens
    usage = {"prompt_tokens": counted, "total_tokens": counted}
    obj = {"object": "list", "data": data, "model": name, "usage": usage}
    # The vectors are RawJSON (Go's float32 text): the Go encoder is the one that writes them.
    return go_json(obj).encode()
