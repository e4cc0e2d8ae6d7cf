"""The one-shot's terminal: the Local/Cloud menu, the live redraw (through rich), warnings
collected until the table is drawn."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final, TextIO

from ometer_exporter.store.records import ModelKey
from ometer_exporter.views import grades

if TYPE_CHECKING:  # rich is imported when the one-shot draws, not with this module
    from rich.console import Console
    from rich.control import Control, ControlType
    from rich.text import Text

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


def menu(stdin: TextIO, stderr: TextIO) -> tuple[bool, bool] | None:
    """Ask which targets to use; (local, cloud), or None for Cancel (or end of input). Asked
    only when both kinds of target exist (there is no choice to make otherwise)."""
    print("Record which models?", file=stderr)
    for number, (label, _) in enumerate(MENU, 1):
        print(f"  {number}) {label}", file=stderr)
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


def _console(stream: TextIO) -> Console:
    """A rich console writing to ``stream``: literal text (no markup, emoji codes or
    highlighting), no wrapping of its own. Colours come already decided in the text
    (``Options.color``: a terminal, no ``NO_COLOR``); rich drops them, and every cursor move,
    when it finds ``stream`` is not a terminal."""
    from rich.console import Console

    return Console(
        file=stream,
        color_system="256",
        no_color=False,
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=True,
        legacy_windows=False,
    )


def _control(codes: str, *meaning: ControlType) -> Control:
    """A control sequence for rich to write (to a terminal only; it takes no cells)."""
    from rich.control import Control
    from rich.segment import Segment

    control = Control()
    control.segment = Segment(codes, None, [(code,) for code in meaning])
    return control


class Screen:
    """Redraws a block of text in place on a terminal (cursor up, clear to the end), through
    rich: it measures each line's display width to know how many terminal rows the block takes.

    When the block no longer fits the terminal it cannot be redrawn in place: a one-line
    progress note stands in for it until the final draw.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.console = _console(stream)
        self._lines = 0

    def _block(self, text: str) -> tuple[Text, int]:
        """``text`` (with its ANSI colours) as rich Text, and the terminal rows it takes."""
        from rich.cells import cell_len
        from rich.text import Text

        block = Text.from_ansi(text, no_wrap=True)
        if not self.console.is_terminal:
            block = Text(block.plain, no_wrap=True)
        columns = max(1, self.console.size.width)
        rows = sum(max(1, math.ceil(cell_len(line) / columns)) for line in block.plain.split("\n"))
        return block, rows

    def draw(self, text: str, *, fallback: str = "", final: bool = False) -> None:
        from rich.control import ControlType

        block, rows = self._block(text)
        if not final and rows >= self.console.size.height:
            block, rows = self._block(fallback)
        if self._lines:  # back to the block's first row, then clear to the end of the screen
            up = ControlType.CURSOR_UP, ControlType.CURSOR_MOVE_TO_COLUMN
            self.console.control(_control(f"\x1b[{self._lines}F\x1b[J", *up))
        self.console.print(block)
        self.stream.flush()
        self._lines = 0 if final else rows


class Progress:
    """Export mode: progress on stderr (one line redrawn on a terminal, else a line each)."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.console = _console(stream)
        self.tty = self.console.is_terminal

    def update(self, running: Sequence[ModelKey], finished: ModelKey | None) -> None:
        from rich.text import Text

        if finished is not None:
            self.done += 1
        if self.tty:
            now = ", ".join(grades.plain(m) for _, m in running[:3]) or "done"
            self._clear_line()
            self.console.print(Text(f"[{self.done}/{self.total}] {now}"), end="")
        elif finished is not None:
            target, model = finished
            line = f"[{self.done}/{self.total}] {grades.plain(model)} ({grades.plain(target)})"
            self.console.print(Text(line))
        self.stream.flush()

    def note(self, text: str) -> None:
        """What the running work has just done (a load sweep's level): on a terminal the
        progress line says it, elsewhere a line each."""
        from rich.text import Text

        line = f"[{self.done}/{self.total}] {grades.plain(text)}"
        if self.tty:
            self._clear_line()
            self.console.print(Text(line), end="")
        else:
            self.console.print(Text(line))
        self.stream.flush()

    def clear(self) -> None:
        """Take the progress line off the terminal (before other output; ``update`` redraws)."""
        if self.tty:
            self._clear_line()
            self.stream.flush()

    def close(self) -> None:
        if self.total:
            self.clear()

    def _clear_line(self) -> None:
        from rich.control import ControlType

        self.console.control(
            _control("\r\x1b[K", ControlType.CARRIAGE_RETURN, ControlType.ERASE_IN_LINE)
        )


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
