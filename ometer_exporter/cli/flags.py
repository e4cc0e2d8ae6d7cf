"""Argument parsing shared by ``serve`` and ``bench``: flags are never abbreviated, and an
unknown flag is an error that says what was meant.

A flag of the other command (``ometer-exporter bench --log.level``, ``ometer-exporter --ttft``)
gets a hint saying where it goes; a near miss (``--ttf``) a did-you-mean. Both exit 2, as every
usage error does.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """The other command: how it is run, and its parser (built only when a hint needs it)."""

    command: str  # e.g. "ometer-exporter bench"
    parser: Callable[[], argparse.ArgumentParser]


def flags_of(parser: argparse.ArgumentParser) -> list[str]:
    """Every long and short flag the parser takes, in the order they were added."""
    return [flag for action in parser._actions for flag in action.option_strings]


def unknown_message(
    extras: Sequence[str], own: Sequence[str], command: str, elsewhere: Elsewhere | None
) -> str:
    """What to say about arguments the parser did not take: the first unknown flag, else the
    first stray argument."""
    flag = next((a for a in extras if a.startswith("-") and a != "-"), None)
    if flag is None:
        return f"unexpected argument {extras[0]!r}; see {command} --help"
    name = flag.partition("=")[0]
    other = flags_of(elsewhere.parser()) if elsewhere is not None else []
    if elsewhere is not None and name in other and name not in own:
        return (f"{name} is a flag of `{elsewhere.command}`, not of `{command}`: give it "
                f"there, e.g. {elsewhere.command} {name} …")  # fmt: skip
    near = difflib.get_close_matches(name, own, n=1, cutoff=0.6)
    if near:
        return (f"unknown flag {name} (flags are never abbreviated); did you mean "
                f"{near[0]}?")  # fmt: skip
    near = difflib.get_close_matches(name, other, n=1, cutoff=0.6)
    if elsewhere is not None and near:
        return (f"unknown flag {name}; did you mean `{elsewhere.command} {near[0]}`? "
                f"({near[0]} is a flag of `{elsewhere.command}`)")  # fmt: skip
    return f"unknown flag {name}; see {command} --help"


class Parser(argparse.ArgumentParser):
    """``allow_abbrev=False``; unknown arguments are named with a hint (``unknown_message``)."""

    def __init__(self, *args: Any, elsewhere: Elsewhere | None = None, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.elsewhere = elsewhere

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> argparse.Namespace:
        self.misplaced(args)
        parsed: argparse.Namespace
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.unknown(extras)
        return parsed

    def misplaced(self, args: Sequence[str] | None) -> None:
        """Name an unknown long flag before parsing: parsed, its value could be taken for
        something else (``ometer-exporter --model llama3.2``: for the command)."""
        own = flags_of(self)
        for arg in args or ():
            if arg == "--":
                return
            if arg.startswith("--") and arg.partition("=")[0] not in own:
                self.unknown([arg])

    def unknown(self, extras: Sequence[str]) -> NoReturn:
        self.error(unknown_message(extras, flags_of(self), self.prog, self.elsewhere))
