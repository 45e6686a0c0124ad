"""Reading what a log file gained since the last read (the live view's event lines, the
drills' scan for revoked eNodeBs accepted): whole lines only, from a remembered offset."""

from __future__ import annotations

import os


def read_new(path, offsets: dict, limit: int | None = None) -> tuple[str, int]:
    """(text, bytes skipped): the complete lines `path` gained since offsets[path], which is
    moved past them (a line being written is read next time). A file smaller than its
    offset is a new one under the old name: read from its start. With `limit`, at most that
    many of the newest bytes are read and the rest is counted as skipped. OSError passes."""
    size = os.path.getsize(path)
    at = offsets.get(path, 0)
    if size < at:
        at = 0
    skipped = 0
    if limit is not None and size - at > limit:
        skipped, at = size - at - limit, size - limit
    with open(path, "rb") as f:
        f.seek(at)
        data = f.read(size - at)
    whole = data.rfind(b"\n") + 1
    offsets[path] = at + whole
    return data[:whole].decode(errors="replace"), skipped
