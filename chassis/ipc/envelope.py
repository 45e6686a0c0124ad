"""The one versioned msgpack envelope: {v, type, id, src, ts, epoch, seq, body}.

Message types are frozen dataclasses registered under a wire name. Decoding checks
the version, the type and every body field's type, and raises DecodeError, so a
runner can answer a bad message with an Error reply instead of crashing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

VERSION = 1
MAX_MESSAGE = 64 * 1024 * 1024

_REGISTRY: dict[str, type] = {}
_FIELDS: dict[type, dict[str, tuple[type, ...]]] = {}


def message(name: str):
    """Class decorator: a frozen dataclass carried under wire type `name`."""

    def wrap(cls):
        cls = dataclass(frozen=True)(cls)
        cls.TYPE = name
        if name in _REGISTRY:
            raise ValueError(f"message type {name!r} registered twice")
        _REGISTRY[name] = cls
        _FIELDS[cls] = {
            f: _accepted(t) for f, t in typing.get_type_hints(cls).items() if f != "TYPE"
        }
        return cls

    return wrap


def _accepted(hint) -> tuple[type, ...]:
    """Python types a field accepts after a msgpack round trip."""
    if hint is Any or hint is object:
        return (object,)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for arg in typing.get_args(hint) for t in _accepted(arg))
    origin = typing.get_origin(hint) or hint
    if origin is type(None):
        return (type(None),)
    if origin is float:
        return (float, int)
    if origin in (list, tuple):
        return (list, tuple)
    return (origin,)


class DecodeError(Exception):
    """A message that cannot be used; `ref` is its id when that much was readable."""

    def __init__(self, reason: str, ref: int | None = None, src: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.ref = ref
        self.src = src


@dataclass(frozen=True)
class Envelope:
    msg: Any
    id: int = 0
    src: str = ""
    ts: float = 0.0
    epoch: int = 0
    seq: int = 0

    @property
    def type(self) -> str:
        return self.msg.TYPE


def encode(env: Envelope) -> bytes:
    msg = env.msg
    body = {f: getattr(msg, f) for f in _FIELDS[type(msg)]}
    return msgpack.packb(
        {
            "v": VERSION,
            "type": msg.TYPE,
            "id": env.id,
            "src": env.src,
            "ts": env.ts,
            "epoch": env.epoch,
            "seq": env.seq,
            "body": body,
        },
        use_bin_type=True,
    )


_HEADER: dict[str, tuple[type, ...]] = {
    "v": (int,),
    "type": (str,),
    "id": (int,),
    "src": (str,),
    "ts": (float, int),
    "epoch": (int,),
    "seq": (int,),
    "body": (dict,),
}


def decode(data: bytes) -> Envelope:
    if len(data) > MAX_MESSAGE:
        raise DecodeError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise DecodeError("envelope is not a map")
    ref = raw.get("id") if isinstance(raw.get("id"), int) else None
    src = raw.get("src") if isinstance(raw.get("src"), str) else ""
    for key, accepted in _HEADER.items():
        if not isinstance(raw.get(key), accepted) or isinstance(raw.get(key), bool):
            raise DecodeError(f"envelope field {key!r} missing or mistyped", ref, src)
    if raw["v"] != VERSION:
        raise DecodeError(f"unsupported envelope version {raw['v']}", ref, src)
    cls = _REGISTRY.get(raw["type"])
    if cls is None:
        raise DecodeError(f"unknown message type {raw['type']!r}", ref, src)
    body = raw["body"]
    fields = _FIELDS[cls]
    extra = set(body) - set(fields)
    if extra:
        raise DecodeError(f"{raw['type']}: unknown field(s) {sorted(map(str, extra))}", ref, src)
    kwargs = {}
    for name, accepted in fields.items():
        if name not in body:
            default = _default(cls, name)
            if default is dataclasses.MISSING:
                raise DecodeError(f"{raw['type']}: missing field {name!r}", ref, src)
            continue
        value = body[name]
        if object not in accepted and (
            not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted)
        ):
            raise DecodeError(
                f"{raw['type']}: field {name!r} has type {type(value).__name__}", ref, src
            )
        kwargs[name] = value
    return Envelope(
        cls(**kwargs), raw["id"], raw["src"], float(raw["ts"]), raw["epoch"], raw["seq"]
    )


def _default(cls, name):
    field = cls.__dataclass_fields__[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


class Message:
    """Base for typing only; every message class also gets TYPE from @message."""

    TYPE: ClassVar[str]
