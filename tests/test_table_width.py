"""The terminal table by display width (wide CJK and emoji names), literal names, lazy rich."""

from __future__ import annotations

import io
import subprocess
import sys
import unicodedata

import pytest
from factories import entry

from ometer_exporter.cli.oneshot.screen import Screen
from ometer_exporter.views import rows as export
from ometer_exporter.views import table

CJK, EMOJI = "通义千问:7b", "llama🦙:latest"
NAMES = ("llama3.2:1b", CJK, EMOJI, "qwen3:8b")


def width(char: str) -> int:
    """Terminal cells of one character: East Asian wide/fullwidth (CJK, emoji) take two."""
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cells(line: str) -> list[str]:
    """The line as terminal cells: a wide character fills its cell and an empty one after."""
    out: list[str] = []
    for char in line:
        out += [char] + [""] * (width(char) - 1)
    return out


def spans(rule: str) -> list[tuple[int, int]]:
    """Each column's [start, end) in display cells, from the ``─`` rule under the header."""
    found, start = [], None
    for i, char in enumerate([*cells(rule), " "]):
        if char == "─" and start is None:
            start = i
        elif char != "─" and start is not None:
            found.append((start, i))
            start = None
    return found


def test_wide_and_emoji_names_line_up_with_ascii_names() -> None:
    assert width("通") == 2 and width("🦙") == 2  # the premise: len() would be wrong here
    rows = [export.row(entry("local", name, ttft=0.1 * i, tps=10.0 * i))
            for i, name in enumerate(NAMES, 1)]  # fmt: skip
    text = table.render(rows, table.Layout())
    header, rule, *body = text.split("\n")
    columns = spans(rule)
    assert [line.split()[0] for line in body] == list(NAMES)
    model = columns[0]
    assert model[1] - model[0] == max(sum(map(width, n)) for n in NAMES)
    numeric = {"Size", "Context", "TTFT", "TPS"}
    titles = ["Model", "Size", "Context", "Quant", "Capabilities", "TTFT", "TPS"]
    assert header.split() == titles
    for line in [header, *body]:
        grid = cells(line)
        grid += [" "] * (columns[-1][1] - len(grid))  # the last column's padding is stripped
        assert len(grid) == columns[-1][1], line  # no row runs past the rule
        for title, (start, end) in zip(titles, columns, strict=True):
            # Every column begins (or, right-aligned, ends) at the same display column ...
            edge = end - 1 if title in numeric else start
            assert grid[edge] not in (" ", ""), (line, title)
            # ... and the two-space gap before the next column is blank.
            assert grid[end:end + 2] in ([" ", " "], []), (line, title)  # fmt: skip


def test_colour_keeps_the_alignment() -> None:
    rows = [export.row(entry("local", name)) for name in NAMES]
    plain = table.render(rows, table.Layout())
    coloured = table.render(rows, table.Layout(), color=True)
    from rich.text import Text

    assert "\x1b[" in coloured
    assert Text.from_ansi(coloured).plain == plain


def test_names_are_literal_text_never_rich_markup_or_emoji_codes() -> None:
    names = ["[bold red]x[/bold red]:latest", ":smile:latest", "[link=http://e.x]y[/link]:1b"]
    rows = [export.row(entry("local", name)) for name in names]
    for color in (False, True):
        text = table.render(rows, table.Layout(), color=color)
        for name in names:
            assert name in text
        assert "😄" not in text and "\x1b]8" not in text  # no emoji, no hyperlink


def test_the_live_redraw_counts_terminal_rows_by_display_width(monkeypatch) -> None:
    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "10")
    monkeypatch.setenv("LINES", "20")
    stream = FakeTTY()
    screen = Screen(stream)
    screen.draw("通义千问通义")  # 6 wide characters: 12 cells, two rows of a 10-column terminal
    screen.draw("next", final=True)
    assert stream.getvalue() == "通义千问通义\n\x1b[2F\x1b[Jnext\n"


def test_the_live_redraw_writes_no_control_sequences_when_not_a_terminal() -> None:
    stream = io.StringIO()
    screen = Screen(stream)
    screen.draw("\x1b[32mone\x1b[0m")
    screen.draw("two", final=True)
    assert stream.getvalue() == "one\ntwo\n"


@pytest.mark.parametrize("module", ["ometer_exporter.web.app", "ometer_exporter.cli.main"])
def test_serve_does_not_import_rich(module: str) -> None:
    # httpx imports rich for its own command-line client when click is installed (the test
    # tools bring click in); without its CLI, as in a plain install, nothing may import rich.
    code = (
        "import sys\n"
        "sys.modules['httpx._main'] = None\n"
        f"import {module}\n"
        "assert 'rich' not in sys.modules, sorted(m for m in sys.modules if 'rich' in m)\n"
        "import ometer_exporter.cli.oneshot.run\n"
        "assert 'rich' not in sys.modules, 'the one-shot imports rich only when it draws'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
