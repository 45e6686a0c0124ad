"""Argument types for `<var:TYPE>` / `<var:TYPE(a-b)>` in command syntax.

A type is a name, a parser (token -> value, raising ArgError) and the help text shown by `?`.
New types are registered per grammar with `Grammar.register_type(name, factory)`, where
`factory(params)` gets the text between the parentheses (or None) and returns an ArgType.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .tokens import Token, quote


class ArgError(ValueError):
    pass


@dataclass(frozen=True)
class ArgType:
    name: str
    describe: str  # shown by `?`, e.g. "<1-256 chars>"
    parse: Callable[[Token], Any]
    render: Callable[[Any], str] = lambda v: quote(str(v))


TypeFactory = Callable[[str | None], ArgType]

_RANGE = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


def parse_range(params: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if params is None:
        return default
    m = _RANGE.match(params)
    if not m or int(m.group(1)) > int(m.group(2)):
        raise ValueError(f"bad range {params!r}")
    return int(m.group(1)), int(m.group(2))


def _string(params: str | None) -> ArgType:
    lo, hi = parse_range(params, (1, 256))

    def parse(tok: Token) -> str:
        if not lo <= len(tok.text) <= hi:
            raise ArgError(f"must be {lo}-{hi} characters")
        if not tok.text.isprintable():  # a configuration line cannot hold control characters
            raise ArgError("must be printable")
        return tok.text

    return ArgType("STRING", f"<{lo}-{hi} chars>", parse)


def _name(params: str | None) -> ArgType:
    lo, hi = parse_range(params, (1, 63))

    def parse(tok: Token) -> str:
        if not lo <= len(tok.text) <= hi:
            raise ArgError(f"must be {lo}-{hi} characters")
        if any(c.isspace() or c == '"' or not c.isprintable() for c in tok.text):
            raise ArgError("must not contain spaces or quotes")
        return tok.text

    return ArgType("NAME", f"<{lo}-{hi} chars, no spaces>", parse)


_INT = re.compile(r"^-?\d{1,20}$")


def _int(params: str | None) -> ArgType:
    lo, hi = parse_range(params, (0, 4294967295))

    def parse(tok: Token) -> int:
        if tok.quoted or not _INT.match(tok.text):
            raise ArgError("not an integer")
        value = int(tok.text)
        if not lo <= value <= hi:
            raise ArgError(f"out of range {lo}-{hi}")
        return value

    return ArgType("INT", f"<{lo}-{hi}>", parse, render=str)


def _ip(kind: str) -> TypeFactory:
    classes = {"IPV4": (ipaddress.IPv4Address,), "IPV6": (ipaddress.IPv6Address,)}
    classes["IPADDR"] = classes["IPV4"] + classes["IPV6"]
    describe = {"IPV4": "<A.B.C.D>", "IPV6": "<X:X::X:X>", "IPADDR": "<A.B.C.D | X:X::X:X>"}

    def factory(params: str | None) -> ArgType:
        if params is not None:
            raise ValueError(f"{kind} takes no parameters")

        def parse(tok: Token) -> str:
            if "%" in tok.text:  # no IPv6 zone ids in configuration
                raise ArgError("zone ids are not allowed")
            for cls in classes[kind]:
                try:
                    return str(cls(tok.text))
                except ValueError:
                    continue
            raise ArgError(f"not a valid {describe[kind]} address")

        return ArgType(kind, describe[kind], parse, render=str)

    return factory


# StarOS URLs: [file:]/flash/..., tftp://, ftp://, sftp://, http(s)://, ldap(s)://
_URL = re.compile(r"^(?:(?:file|https?|s?ftp|tftp|ldaps?)://\S+|file:/\S+|/\S+)$", re.IGNORECASE)


def _url(params: str | None) -> ArgType:
    lo, hi = parse_range(params, (1, 1023))

    def parse(tok: Token) -> str:
        if not lo <= len(tok.text) <= hi or not _URL.match(tok.text):
            raise ArgError("not a valid URL")
        return tok.text

    return ArgType("URL", "<url: /flash/path | scheme://host/path>", parse)


BUILTIN_TYPES: dict[str, TypeFactory] = {
    "STRING": _string,
    "NAME": _name,
    "INT": _int,
    "IPV4": _ip("IPV4"),
    "IPV6": _ip("IPV6"),
    "IPADDR": _ip("IPADDR"),
    "URL": _url,
}
