"""`chassis cli`: the interactive StarOS shell (prompt_toolkit), a client of the supervisor.

Tab completes and `?` lists what may come next, both answered by the supervisor's
grammar over the CLI socket, so the shell has no second copy of any command.
"""

from __future__ import annotations

import sys

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.key_binding import KeyBindings

from chassis.client import CliSession


class RemoteCompleter(Completer):
    def __init__(self, session: CliSession) -> None:
        self.session = session

    def get_completions(self, document, complete_event):
        text = document.text_before_cursor
        partial = "" if text.endswith(" ") else (text.split()[-1] if text.split() else "")
        for word in self.session.complete(text):
            yield Completion(word, start_position=-len(partial))


def format_help(entries: list[tuple[str, str]]) -> str:
    width = max((len(w) for w, _ in entries), default=0)
    return "\n".join(f"  {w.ljust(width)}  {h}".rstrip() for w, h in entries)


def interactive(session: CliSession) -> int:
    bindings = KeyBindings()

    @bindings.add("?")
    def _(event):
        buffer = event.app.current_buffer
        entries = session.help(buffer.text)
        event.app.print_text(
            f"{session.prompt} {buffer.text}?\n{format_help(entries) or '  % no help'}\n"
        )

    prompt = PromptSession(
        completer=RemoteCompleter(session), key_bindings=bindings, complete_while_typing=False
    )
    failed = False
    while not session.closed:
        try:
            line = prompt.prompt(session.prompt + " ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        res = session.execute(line)
        failed = res.error
        if res.output:
            print(res.output)
    return 1 if failed else 0


def batch(session: CliSession, lines) -> int:
    """Non-interactive input (a pipe): echo each command like a console log."""
    status = 0
    for line in lines:
        line = line.rstrip("\n")
        print(f"{session.prompt} {line}")
        res = session.execute(line)
        if res.output:
            print(res.output)
        if res.error:
            status = 1
        if session.closed:
            break
    sys.stdout.flush()
    return status
