"""The one-shot's terminal: the Local/Cloud menu, the live redraw, warnings collected until the
table is drawn."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
from collections.abc import Iterator, Sequence
from typing import Final, TextIO

from ometer_exporter.store.records import ModelKey
from ometer_exporter.views import grades

# -- the interactive menu --------------------------------------------------------------------


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


MENU: Final = (
    ("Both local and cloud", (True, True)),
    ("Local", (True, False)),
    ("Cloud", (False, True)),
    ("Cancel", None),
)


def menu(stdin: TextIO, stderr: TextIO, *, has_cloud: bool) -> tuple[bool, bool] | None:
    """Ask which targets to use; (local, cloud), or None for Cancel (or end of input)."""
    print("Record which models?", file=stderr)
    for number, (label, choice) in enumerate(MENU, 1):
        note = "" if has_cloud or choice is None or choice[0] else "  (no cloud target configured)"
        print(f"  {number}) {label}{note}", file=stderr)
    while True:
        print("Choice [1]: ", end="", file=stderr, flush=True)
        answer = stdin.readline()
        if not answer:  # end of input
            print(file=stderr)
            return None
        text = answer.strip().lower() or "1"
        for number, (label, choice) in enumerate(MENU, 1):
            if text in (str(number), label.lower(), label.split()[0].lower()):
                return choice
        print(f"Please answer 1-{len(MENU)}.", file=stderr)


# -- output ----------------------------------------------------------------------------------

_ANSI_SEQUENCE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Screen:
    """Redraws a block of text in place on a terminal (cursor up, clear to the end).

    When the block no longer fits the terminal it cannot be redrawn in place: a one-line
    progress note stands in for it until the final draw.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines = 0

    def _height(self, text: str) -> int:
        columns = max(1, shutil.get_terminal_size().columns)
        return sum(
            max(1, math.ceil(len(_ANSI_SEQUENCE.sub("", line)) / columns))
            for line in text.split("\n")
        )

    def draw(self, text: str, *, fallback: str = "", final: bool = False) -> None:
        if not final and self._height(text) >= shutil.get_terminal_size().lines:
            text = fallback
        if self._lines:
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._lines = 0 if final else self._height(text)


class Progress:
    """Export mode: progress on stderr (one line redrawn on a terminal, else a line each)."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.tty = isatty(stream)

    def update(self, running: Sequence[ModelKey], finished: ModelKey | None) -> None:
        if finished is not None:
            self.done += 1
        if self.tty:
            now = ", ".join(grades.plain(m) for _, m in running[:3]) or "done"
            self.stream.write(f"\r\x1b[K[{self.done}/{self.total}] {now}")
        elif finished is not None:
            target, model = finished
            self.stream.write(f"[{self.done}/{self.total}] {grades.plain(model)} ({target})\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.total:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class _Collect(logging.Handler):
    """Holds the exporter's warnings during a run: printed mid-table they would tear it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(grades.plain(record.getMessage()))


@contextlib.contextmanager
def collected_warnings(stderr: TextIO) -> Iterator[None]:
    logger = logging.getLogger("ometer_exporter")
    handler = _Collect()
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        for message in handler.messages:
            print(f"warning: {message}", file=stderr)
