"""Values that cross the engine boundary: command results, failures and boot errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

NOTICE_PREFIXES = ("Failure: ", "Warning: ", "Info: ")


@dataclass
class Result:
    output: str = ""  # what the box prints, without prompt/echo and without a final newline
    data: Any = None  # structured data for --json (show commands), else None
    error: bool = False  # parse error or operation failure
    close: bool = False  # `exit` from Exec: the client should end the session
    # Set when the command needs I/O (a URL fetch, key generation in the pool): the runner
    # awaits it and sends its Result instead of this one.
    pending: Callable[[], Awaitable[Result]] | None = None


@dataclass
class Deferred:
    """What a handler returns when it needs I/O before it can change anything.

    `work` does the I/O (it may raise CommandFailure) and must not touch the configuration,
    since other sessions run while it waits. `apply(value)` then runs at once, inside a
    configuration transaction, like a synchronous handler: so a failure still changes nothing.
    """

    work: Callable[[], Awaitable[Any]]
    apply: Callable[[Any], Any]


class CommandFailure(Exception):
    """Raised by a handler: the command changes nothing and prints `Failure: <message>`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def output(self) -> str:
        return (
            self.message if self.message.startswith(NOTICE_PREFIXES) else f"Failure: {self.message}"
        )


@dataclass(frozen=True)
class BootError:
    line_no: int  # 1-based line number in the boot configuration
    text: str  # the line, stripped
    message: str  # one-line reason
    column: int | None = None  # column of the bad word for parse errors


@dataclass(frozen=True)
class ConfigError:
    """An error recorded on a configuration block (which is then kept out of service)."""

    line_no: int | None
    text: str
    message: str
