"""One CLI session: the mode stack, the exec context and per-session flags."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .config import Block
from .grammar import Match, ParseError
from .result import CommandFailure, Deferred, Result
from .tokens import Token, tokenize

if TYPE_CHECKING:
    from .engine import Engine

CONFIRM_PROMPT = "Are you sure? [Yes|No]:"  # like every prompt: the client adds the space
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def timestamp_line(now: datetime) -> str:
    """`Tuesday March 05 17:13:14 UTC 2024` (locale-independent)."""
    tz = now.tzname() or "UTC"
    return (
        f"{_DAYS[now.weekday()]} {_MONTHS[now.month - 1]} {now.day:02d} "
        f"{now.hour:02d}:{now.minute:02d}:{now.second:02d} {tz} {now.year}"
    )


@dataclass
class Frame:
    mode: str
    block: Block


class CommandContext:
    """What a handler gets besides its args."""

    def __init__(self, session: Session, match: Match):
        self.session = session
        self.engine = session.engine
        self.system = session.engine.system
        self.block: Block = session.frames[-1].block  # the config block of the current mode
        self.match = match
        self.line = match.line  # canonical command line (keywords in full)
        self.values = match.values
        self._after: list[Callable[[], None]] = []

    def now(self) -> datetime | None:
        return self.session.now() if self.session.now else None

    # Mode changes apply only once the command has succeeded.
    def enter(self, mode: str, block: Block | None = None) -> None:
        blk = block or self.block
        self._after.append(lambda: self.session.frames.append(Frame(mode, blk)))

    def exit(self) -> None:
        self._after.append(self.session._exit)

    def end(self) -> None:
        self._after.append(self.session._end)

    def later(self, fn: Callable[[], None]) -> None:
        """Run `fn` after the command succeeded (e.g. a session flag change)."""
        self._after.append(fn)

    def confirm(self, action: Callable[[], Any]) -> Result:
        """Ask `Are you sure? [Yes|No]:`; the session's next line answers it."""
        if self.session.boot:
            raise CommandFailure("confirmation needed; use -noconfirm in a configuration file")
        self._after.append(lambda: setattr(self.session, "_pending", (action, self)))
        return Result()


class Session:
    def __init__(
        self, engine: Engine, now: Callable[[], datetime] | None = None, boot: bool = False
    ):
        self.engine = engine
        self.now = now
        self.boot = boot  # a boot-configuration session: errors mark blocks, never clear them
        self.frames: list[Frame] = [Frame("exec", engine.config.root)]
        self.exec_context = "local"
        self.timestamps = False  # real boxes default to on; off here keeps output diffable
        self.terminal_length: int | None = None
        self.terminal_width: int | None = None
        self.closed = False
        self._pending: tuple[Callable[[], Any], CommandContext] | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.frames[-1].mode

    @property
    def awaiting_confirmation(self) -> bool:
        return self._pending is not None

    @property
    def context(self) -> str:
        """The context shown in the prompt: the configured one, else the exec context."""
        for frame in reversed(self.frames):
            if frame.block.kind == "context" and frame.block.name:
                return frame.block.name
        return self.exec_context

    @property
    def prompt(self) -> str:
        self._revalidate()
        if self._pending is not None:
            return CONFIRM_PROMPT
        label = self.engine.grammar.modes[self.mode].label
        suffix = f"({label})" if label else ""
        return f"[{self.context}]{self.engine.hostname}{suffix}#"

    def _revalidate(self) -> None:
        # Another session may have removed the block we are in, or our exec context.
        for i, frame in enumerate(self.frames[1:], 1):
            if not frame.block.attached:
                del self.frames[i:]
                break
        if self.engine.config.context(self.exec_context) is None:
            self.exec_context = "local"

    def _exit(self) -> None:
        if len(self.frames) > 1:
            self.frames.pop()
        else:
            self.closed = True

    def _end(self) -> None:
        del self.frames[1:]

    # -- the three entry points ----------------------------------------------------------------

    def execute(self, line: str) -> Result:
        try:
            return self._execute(line)
        except Exception as exc:  # a handler bug must not kill the client's session
            self.engine.config.rollback()
            return Result(f"Failure: internal error: {exc!r}", error=True)

    def complete(self, line: str) -> list[str]:
        try:
            tk = tokenize(line)
            if tk.open_quote or self._pending is not None:
                return []
            tokens, partial = _split(tk)
            if partial is not None and partial.quoted:
                return []
            return self.engine.grammar.complete(self.mode, tokens, partial.text if partial else "")
        except Exception:
            return []

    def help(self, line: str) -> list[tuple[str, str]]:
        try:
            out = self._help(line)
            return [] if isinstance(out, ParseError) else out
        except Exception:
            return []

    # -- internals -----------------------------------------------------------------------------

    def _help(self, line: str) -> list[tuple[str, str]] | ParseError:
        tk = tokenize(line)
        if tk.open_quote or self._pending is not None:
            return []
        tokens, partial = _split(tk)
        return self.engine.grammar.help(self.mode, tokens, partial)

    def _execute(self, line: str) -> Result:
        if self.closed:
            return Result("Failure: session is closed", error=True, close=True)
        line = line.rstrip("\r\n")
        self._revalidate()
        if self._pending is not None:
            return self._answer(line)
        stripped = line.strip()
        if not stripped:
            return Result()
        if stripped.startswith("#"):
            if stripped != "#exit":
                return Result()  # remark
            line = stripped = "exit"
        if stripped.endswith("?") and not self.boot:  # in a file, `?` is just a character
            head = line.rstrip()[:-1]
            if not tokenize(head).open_quote:
                return self._help_output(head)
        tk = tokenize(line)
        if tk.open_quote:
            parsed: Match | ParseError = ParseError("unterminated", tk.tokens[-1].start)
        else:
            parsed = self.engine.grammar.parse(self.mode, tk.tokens, len(line.rstrip()) + 1)
        if isinstance(parsed, ParseError):
            return Result(parsed.render(line), error=True)
        return self._stamp(self._run(parsed))

    def _help_output(self, head: str) -> Result:
        items = self._help(head)
        if isinstance(items, ParseError):
            return Result(items.render(head), error=True)
        if not items:
            tk = tokenize(head)
            column = tk.tokens[-1].start if tk.tokens else 0
            return Result(ParseError("invalid", column).render(head), error=True)
        width = max(20, *(len(w) for w, _ in items))
        lines = [f"  {w:<{width}} - {h}" if h else f"  {w}" for w, h in items]
        return Result("\n".join(lines))

    def _run(self, match: Match) -> Result:
        ctx = CommandContext(self, match)
        return self._transaction(ctx, lambda: match.command.handler(match.args, ctx))

    def _transaction(self, ctx: CommandContext, step: Callable[[], Any]) -> Result:
        """Run one handler step; a failure rolls every configuration change back."""
        config = self.engine.config
        config.begin()
        try:
            outcome = step()
            if isinstance(outcome, Deferred):
                config.rollback()  # nothing may change before the I/O is done
                return Result(pending=lambda: self._finish(ctx, outcome))
            result = _as_result(outcome)
            # Operator changes inside an errored block mean it has been looked at and fixed.
            if config.dirty and not self.boot:
                ctx.block.clear_errors()
        except CommandFailure as failure:
            config.rollback()
            return Result(failure.output, error=True)
        except Exception as exc:
            config.rollback()
            return Result(f"Failure: internal error: {exc!r}", error=True)
        config.commit()
        for fn in ctx._after:
            fn()
        result.close = result.close or self.closed
        return result

    async def _finish(self, ctx: CommandContext, deferred: Deferred) -> Result:
        try:
            value = await deferred.work()
        except CommandFailure as failure:
            return self._stamp(Result(failure.output, error=True))
        except Exception as exc:
            return self._stamp(Result(f"Failure: internal error: {exc!r}", error=True))
        return self._stamp(self._transaction(ctx, lambda: deferred.apply(value)))

    def _answer(self, line: str) -> Result:
        (action, ctx), self._pending = self._pending, None
        answer = line.strip().lower()
        if not answer or not "yes".startswith(answer):
            return self._stamp(Result())
        config = self.engine.config
        config.begin()
        try:
            outcome = action()
            if isinstance(outcome, Deferred):  # confirmed work that waits on I/O
                config.rollback()
                return Result(pending=lambda: self._finish(ctx, outcome))
            result = _as_result(outcome)
        except CommandFailure as failure:
            config.rollback()
            return self._stamp(Result(failure.output, error=True))
        except Exception as exc:
            config.rollback()
            return self._stamp(Result(f"Failure: internal error: {exc!r}", error=True))
        config.commit()
        return self._stamp(result)

    def _stamp(self, result: Result) -> Result:
        if self.timestamps and self.now is not None:
            stamp = timestamp_line(self.now())
            result.output = f"{stamp}\n{result.output}" if result.output else stamp
        return result


def _split(tk) -> tuple[tuple[Token, ...], Token | None]:
    """(complete words, the partial last word or None when a new word starts)."""
    if tk.trailing_space or not tk.tokens:
        return tk.tokens, None
    return tk.tokens[:-1], tk.tokens[-1]


def _as_result(out: Any) -> Result:
    if out is None:
        return Result()
    if isinstance(out, str):
        return Result(out)
    if isinstance(out, Result):
        return out
    raise TypeError(f"handler returned {type(out).__name__}")
