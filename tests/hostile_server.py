"""A tiny Ollama look-alike that answers exactly the bytes it is told to (tests/test_hostile.py).

Not the emulator: the emulator is faithful to Ollama (docs/ollama-protocol.md); this server is
deliberately not. Each endpoint answers a configured status and body; ``/api/chat`` streams the
configured lines one write each (a short pause between them, as tokens would come), and answers
an unload request (empty ``messages``) with a plain done object, as Ollama does.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "victim:latest"
CHUNK_PAUSE = 0.002  # seconds between two streamed lines
DIGEST = "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72"


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def tag_entry(name: str = MODEL, **fields: Any) -> dict[str, Any]:
    """A well-formed /api/tags entry; `fields` (and `details` inside it) override."""
    details = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
               "parameter_size": "3.2B", "quantization_level": "Q4_K_M",
               **fields.pop("details", {})}  # fmt: skip
    entry = {"name": name, "model": name, "modified_at": "2026-08-22T10:01:02.123456789+02:00",
             "size": 2019393189, "digest": DIGEST, "details": details,
             "capabilities": ["completion", "tools"]}  # fmt: skip
    entry.update(fields)
    return entry


def show_body(**info: Any) -> dict[str, Any]:
    model_info = {"general.architecture": "llama", "general.parameter_count": 3212749888,
                  "llama.context_length": 131072, "llama.embedding_length": 3072,
                  **info}  # fmt: skip
    return {"modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
            "details": tag_entry()["details"], "model_info": model_info,
            "capabilities": ["completion", "tools"],
            "modified_at": "2026-08-22T10:01:02Z"}  # fmt: skip


def ps_entry(name: str = MODEL, **fields: Any) -> dict[str, Any]:
    entry = {"name": name, "model": name, "size": 3_000_000_000, "digest": "a80c4f17",
             "details": tag_entry()["details"], "expires_at": "2026-08-22T10:06:02.5+02:00",
             "size_vram": 3_000_000_000, "context_length": 4096}  # fmt: skip
    entry.update(fields)
    return entry


def chunk(text: str = "Hi") -> bytes:
    return dumps({"model": MODEL, "created_at": "2026-08-22T08:01:02.1Z",
                  "message": {"role": "assistant", "content": text}, "done": False})  # fmt: skip


def done_line(**fields: Any) -> bytes:
    done: dict[str, Any] = {"model": MODEL, "created_at": "2026-08-22T08:01:03Z",
                            "message": {"role": "assistant", "content": ""}, "done": True,
                            "done_reason": "length", "total_duration": 80_000_000,
                            "load_duration": 1_000_000, "prompt_eval_count": 12,
                            "prompt_eval_duration": 4_000_000, "eval_count": 16,
                            "eval_duration": 64_000_000}  # fmt: skip
    done.update(fields)
    return dumps(done)


@dataclass
class Reply:
    body: bytes
    status: int = 200


@dataclass
class Bodies:
    """What each endpoint answers; the defaults are one well-behaved model, loaded."""

    version: Reply = field(default_factory=lambda: Reply(dumps({"version": "0.33.0"})))
    tags: Reply = field(default_factory=lambda: Reply(dumps({"models": [tag_entry()]})))
    show: Reply = field(default_factory=lambda: Reply(dumps(show_body())))
    ps: Reply | None = None  # None: the model's entry, its expiry moving as Ollama's does
    chat: list[bytes] = field(default_factory=lambda: [chunk()] * 16 + [done_line()])
    chat_status: int = 200
    embed: Reply = field(default_factory=lambda: Reply(dumps({"model": MODEL, "embeddings": []})))


class HostileServer:
    """``await HostileServer(bodies).start()`` -> its base URL; ``calls`` counts requests."""

    def __init__(self, bodies: Bodies) -> None:
        self.bodies = bodies
        self.calls: Counter[str] = Counter()
        self.finished = 0  # chat requests answered to the end
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/api/version", self._fixed("version"))
        app.router.add_get("/api/tags", self._fixed("tags"))
        app.router.add_post("/api/show", self._fixed("show"))
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/embed", self._fixed("embed"))
        app.router.add_post("/api/chat", self._chat)
        self._runner = web.AppRunner(app)

    async def start(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        await self._runner.cleanup()

    def _fixed(self, name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            self.calls[request.path] += 1
            reply: Reply = getattr(self.bodies, name)
            return web.Response(body=reply.body, status=reply.status,
                                content_type="application/json")  # fmt: skip

        return handler

    async def _ps(self, request: web.Request) -> web.Response:
        """A hostile reply if the case has one; else the loaded model, whose expiry moves each
        time a chat request ends (Ollama recomputes it when the model goes idle)."""
        self.calls[request.path] += 1
        if self.bodies.ps is not None:
            return web.Response(body=self.bodies.ps.body, status=self.bodies.ps.status,
                                content_type="application/json")  # fmt: skip
        expires = f"2026-08-22T10:06:{self.finished % 60:02d}.5+02:00"
        body = dumps({"models": [ps_entry(expires_at=expires)]})
        return web.Response(body=body, content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.calls[request.path] += 1
        body = await request.json()
        if not body.get("messages"):  # an unload
            return web.Response(body=done_line(done_reason="unload"),
                                content_type="application/json")  # fmt: skip
        lines, status = self.bodies.chat, self.bodies.chat_status
        if status != 200:
            return web.Response(body=b"\n".join(lines), status=status,
                                content_type="application/json")  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in lines:
            await response.write(line + b"\n")
            await asyncio.sleep(CHUNK_PAUSE)
        await response.write_eof()
        self.finished += 1
        return response
