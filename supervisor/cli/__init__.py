"""Sans-IO StarOS CLI engine: one grammar for the boot configuration, the shell and exec.

    engine = Engine(system)                  # hostname defaults to system.platform
    session = engine.new_session(now=clock)  # `now` is only used by `timestamps`
    res = session.execute("show card table") # Result(output, data, error, close); never raises
    session.complete("sh ca") -> ["card"]    # full words for the last (partial) word
    session.help("show ")     -> [("card", "Displays card information"), ...]
    engine.apply_boot(text) -> [BootError]   # bad lines reported; their blocks go out of service
    engine.projection(), engine.version, engine.config_text()

Output conventions (the StarOS texts for parse errors are unconfirmed; these are IOS-like):

    show crad table
         ^
    Invalid input detected at '^' marker.

    `Ambiguous command at '^' marker.` (caret under the word), `Incomplete command.`,
    `Unterminated quoted string at '^' marker.`; failures print `Failure: <reason>`,
    notices `Warning: ...` / `Info: ...`. Output carries no final newline.

Simulator choices: `timestamps` is OFF by default (real boxes default to on) so that output is
diffable; `timestamps` turns it on for the session and needs a `now` clock, otherwise no date
line is printed. A line ending in `?` executes as help (not in apply_boot). Commands that ask
`Are you sure? [Yes|No]:` set session.prompt to that question; the next line answers it.
"""

from .actions import EnterBlock, SetLine
from .config import Block, Config, Line
from .engine import Engine, default_grammar
from .grammar import Grammar, Mode
from .result import BootError, CommandFailure, ConfigError, Deferred, Result
from .session import CommandContext, Session
from .syntax import GrammarError
from .system import System

__all__ = [
    "Block",
    "BootError",
    "CommandContext",
    "CommandFailure",
    "Config",
    "ConfigError",
    "Deferred",
    "Engine",
    "EnterBlock",
    "Grammar",
    "GrammarError",
    "Line",
    "Mode",
    "Result",
    "Session",
    "SetLine",
    "System",
    "default_grammar",
]
