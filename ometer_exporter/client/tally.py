"""What a streamed chat has told so far: token clocks, chunk counts, the final fields.

Ollama's NDJSON lines here; the OpenAI client's server-sent events extend it
(``client/openai.py``). Shared by both so a ``ChatStream`` means the same from either.
"""

from __future__ import annotations

from collections.abc import Callable

from ometer_exporter.client.errors import OllamaStreamError, OllamaStreamIncomplete
from ometer_exporter.client.replies import (
    ChatStream,
    DoneFields,
    LineSplitter,
    done_fields,
    parse_split_line,
)


class ChatTally:
    """What a chat stream's lines have told so far: token clocks, chunk counts, the done line."""

    __slots__ = (
        "_safe",
        "_splitter",
        "content_chunks",
        "done",
        "first_content_at",
        "first_token_at",
        "last_token_at",
        "thinking_chunks",
    )

    def __init__(self, safe: Callable[[object], str]) -> None:
        self._safe = safe
        self._splitter = LineSplitter()
        self.first_token_at: float | None = None
        self.first_content_at: float | None = None
        self.last_token_at: float | None = None
        self.thinking_chunks = 0
        self.content_chunks = 0
        self.done: DoneFields | None = None

    def feed(self, data: bytes, now: float) -> None:
        """Count the lines of one network read, all of them read at ``now``."""
        # The hot loop works on locals and stores them back once per read.
        first_token_at = self.first_token_at
        first_content_at = self.first_content_at
        last_token_at = self.last_token_at
        thinking_chunks = self.thinking_chunks
        content_chunks = self.content_chunks
        done = self.done
        parse = parse_split_line
        for line in self._splitter.feed(data):
            obj = parse(line)
            if obj is None:
                continue
            if "error" in obj:
                raise OllamaStreamError(
                    f"/api/chat: error during the stream: {self._safe(obj['error'])}"
                )
            if done is not None:
                continue  # nothing follows done; tolerate it without counting it
            message = obj.get("message")
            if isinstance(message, dict):
                thinking = message.get("thinking")
                content = message.get("content")
                if thinking or content:
                    if first_token_at is None:
                        first_token_at = now
                    last_token_at = now
                    if content:
                        content_chunks += 1
                        if first_content_at is None:
                            first_content_at = now
                    else:
                        thinking_chunks += 1
            if obj.get("done") is True:
                done = done_fields(obj)
        self.first_token_at = first_token_at
        self.first_content_at = first_content_at
        self.last_token_at = last_token_at
        self.thinking_chunks = thinking_chunks
        self.content_chunks = content_chunks
        self.done = done

    def stream(self, sent_at: float, headers_at: float, ended_at: float) -> ChatStream:
        """The finished stream; incomplete when it ended inside a line or before its done line."""
        if self._splitter.pending.strip():
            raise OllamaStreamIncomplete("/api/chat: the stream ended inside a line")
        if self.done is None:
            raise OllamaStreamIncomplete("/api/chat: the stream ended without its done line")
        return ChatStream(
            sent_at=sent_at,
            headers_at=headers_at,
            first_token_at=self.first_token_at,
            first_content_at=self.first_content_at,
            last_token_at=self.last_token_at,
            ended_at=ended_at,
            thinking_chunks=self.thinking_chunks,
            content_chunks=self.content_chunks,
            done=self.done,
        )
