"""Tokenizer for CLI input lines.

Words are separated by whitespace; a word that starts with `"` runs to the next unescaped `"`
and may contain spaces (`\\"` and `\\\\` are the only escapes). Columns are kept so that a
parse error can put its caret under the offending word.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Token:
    text: str  # the value, quotes removed and escapes resolved
    start: int  # column of the first character (the opening quote for a quoted word)
    end: int  # column just past the word
    quoted: bool = False


@dataclass(frozen=True)
class Tokens:
    tokens: tuple[Token, ...]
    open_quote: bool  # the last word is a quoted string still missing its closing quote
    trailing_space: bool  # whitespace after the last word: the next word has not started

    def __iter__(self):
        return iter(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)


def tokenize(line: str) -> Tokens:
    tokens: list[Token] = []
    i, n = 0, len(line)
    open_quote = False
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        start = i
        if line[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    i += 1
                buf.append(line[i])
                i += 1
            if i < n:
                i += 1  # closing quote
            else:
                open_quote = True
            tokens.append(Token("".join(buf), start, i, quoted=True))
        else:
            while i < n and not line[i].isspace():
                i += 1
            tokens.append(Token(line[start:i], start, i))
    trailing = bool(line) and line[-1].isspace() and not open_quote
    return Tokens(tuple(tokens), open_quote, trailing or not tokens)


def needs_quotes(text: str) -> bool:
    return (
        not text
        or text.startswith(("#", '"'))
        or any(c.isspace() or c == '"' for c in text)
        or text.endswith("?")
    )


def quote(text: str) -> str:
    """Render a value so that `tokenize` gives it back unchanged."""
    if not needs_quotes(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
