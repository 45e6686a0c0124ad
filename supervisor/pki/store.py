"""The certificate store on the management card's storage (`cmp cert-store location`).

Layout under the store directory:

    index.json                                   the one source of truth: entry -> its files
    private/                                     0700
    private/certificate-NAME-7-cert.pem          0600, versioned: never overwritten in place
    private/certificate-NAME-7-key.pem

Crash safety comes from ordering, not from locks: an install writes its new versioned files
(fsynced), then swaps in a new index with one atomic rename, and only then deletes the old
files. A `kill -9` at any point leaves an index that names either the old files or the new
ones, all present; loading the store deletes whatever the index does not name. One writer at a
time (the active supervisor) is assumed.

The index holds names, file names and SHA-256 digests, never file contents. Slow work does not
happen here; fsync does, so callers on an event loop may want an executor.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from chassis.ipc.rundir import atomic_write, fsync_dir
from supervisor.pki.credentials import CredentialError

KINDS = ("certificate", "ca-certificate", "csr")
INDEX = "index.json"
TMP_PREFIX = ".tmp-"
MAX_NAME = 256
MAX_LOCATION = 256

_FILE_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,15}(\.[a-z0-9]{1,8})?")  # "cert.pem", "key.pem"
_STORED = re.compile(r"[a-z][A-Za-z0-9_.-]{0,254}")  # file names the index may point at
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


# --- durable file primitives -------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, sync_dir: bool = True) -> None:
    """The chassis's atomic write; 0600 throughout, temp names the store's GC recognises."""
    atomic_write(path, data, 0o600, prefix=TMP_PREFIX, sync_dir=sync_dir)


# --- validation --------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise CredentialError(f"unknown store entry kind {kind!r}")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise CredentialError(f"name must be 1-{MAX_NAME} characters")
    if not name.isprintable():
        raise CredentialError("name contains non-printable characters")


def _slug(name: str) -> str:
    """A readable, path-safe fragment of a name. Not unique: the generation number in every
    stored file name is, and the index (not the file name) says which entry a file belongs to."""
    return _SLUG_UNSAFE.sub("_", name)[:40]


def _corrupt(path: Path) -> CredentialError:
    return CredentialError(f"certificate store index {path} is corrupt; not loading the store")


def _load_index(path: Path) -> tuple[int, dict]:
    """(last generation, {(kind, name): record}) from the index file; empty if there is none."""
    try:
        doc = json.loads((path / INDEX).read_bytes())
    except FileNotFoundError:
        return 0, {}
    except ValueError:
        raise _corrupt(path / INDEX) from None
    try:
        if doc["version"] != 1:
            raise ValueError
        gen, entries = int(doc["generation"]), {}
        for rec in doc["entries"]:
            _check_kind(rec["kind"])
            _check_name(rec["name"])
            files, digests = rec["files"], rec["sha256"]
            if not files or set(files) != set(digests) or int(rec["generation"]) > gen:
                raise ValueError
            if not all(_FILE_KEY.fullmatch(k) and _STORED.fullmatch(v) for k, v in files.items()):
                raise ValueError
            entries[(rec["kind"], rec["name"])] = rec
    except (KeyError, TypeError, ValueError, AttributeError, CredentialError):
        raise _corrupt(path / INDEX) from None
    return gen, entries


def _write_index(path: Path, gen: int, entries: dict) -> None:
    doc = {"version": 1, "generation": gen, "entries": list(entries.values())}
    _write_atomic(path / INDEX, json.dumps(doc, indent=1, sort_keys=True).encode())


def _open_dir(path: Path) -> tuple[int, dict]:
    """Create the store directories if needed, load the index, delete what it does not name."""
    private = path / "private"
    path.mkdir(parents=True, exist_ok=True)
    private.mkdir(mode=0o700, exist_ok=True)
    private.chmod(0o700)  # mkdir's mode is filtered by the umask
    gen, entries = _load_index(path)  # raises before any deletion if the index is bad
    _collect(path, entries)
    return gen, entries


def _collect(path: Path, entries: dict) -> None:
    """Garbage: temp files, and files in private/ that no index entry names (left by a crash
    between writing new files and switching the index, or between switching and deleting)."""
    keep = {f for rec in entries.values() for f in rec["files"].values()}
    for p in (path / "private").iterdir():
        if p.name not in keep and not p.is_dir():
            p.unlink(missing_ok=True)
    for p in path.glob(TMP_PREFIX + "*"):
        if not p.is_dir():
            p.unlink(missing_ok=True)


# --- the store ---------------------------------------------------------------------------------


class Store:
    def __init__(self, roots: dict[str, Path], location: str = "/flash/cert-store") -> None:
        """`roots` maps StarOS devices ("/flash", "/usb1", "/hd-raid") to real directories."""
        self.roots = {dev: Path(p) for dev, p in roots.items()}
        self.location, self.path = self._resolve(location)
        self.private = self.path / "private"
        self._gen, self._entries = _open_dir(self.path)

    def _resolve(self, location: str) -> tuple[str, Path]:
        parts = location.rstrip("/").split("/") if isinstance(location, str) else []
        if (
            len(parts) < 2
            or parts[0] != ""
            or len(location) > MAX_LOCATION
            or any(p in ("", ".", "..") or "\0" in p or len(p) > 255 for p in parts[1:])
        ):
            raise CredentialError(f"invalid cert-store location {location!r}")
        device = "/" + parts[1]
        if device not in self.roots:
            raise CredentialError(
                f"cert-store location must be under {', '.join(sorted(self.roots))}"
            )
        if not self.roots[device].is_dir():
            raise CredentialError(f"storage device {device} is not available")
        return "/".join(parts), self.roots[device].joinpath(*parts[2:])

    # -- reading --

    def _record(self, kind: str, name: str) -> dict:
        try:
            return self._entries[(kind, name)]
        except KeyError:
            raise CredentialError(f"no {kind} named {name} in the certificate store") from None

    def _public(self, rec: dict) -> dict:
        return {
            "kind": rec["kind"],
            "name": rec["name"],
            "generation": rec["generation"],
            "files": dict(rec["files"]),
            "sha256": dict(rec["sha256"]),
            "urls": {key: self._url(fname) for key, fname in rec["files"].items()},
        }

    def _url(self, fname: str) -> str:
        return f"file:{self.location}/private/{fname}"

    def entries(self, kind: str | None = None) -> dict:
        return {k: self._public(rec) for k, rec in self._entries.items() if kind in (None, k[0])}

    def read(self, kind: str, name: str, file: str) -> bytes:
        """A stored file, checked against the digest the index recorded for it."""
        rec = self._record(kind, name)
        if file not in rec["files"]:
            raise CredentialError(f"{kind} {name} has no {file}")
        try:
            data = (self.private / rec["files"][file]).read_bytes()
        except FileNotFoundError:
            raise CredentialError(
                f"the {file} of {kind} {name} is missing from the store"
            ) from None
        if hashlib.sha256(data).hexdigest() != rec["sha256"][file]:
            raise CredentialError(f"the {file} of {kind} {name} is corrupt in the store")
        return data

    def local_url(self, kind: str, name: str, file: str) -> str:
        rec = self._record(kind, name)
        if file not in rec["files"]:
            raise CredentialError(f"{kind} {name} has no {file}")
        return self._url(rec["files"][file])

    # -- writing --

    @staticmethod
    def _write_files(private: Path, kind: str, name: str, gen: int, files: dict) -> dict:
        """Write one entry's versioned files (fsynced) and return its index record."""
        rec = {"kind": kind, "name": name, "generation": gen, "files": {}, "sha256": {}}
        for key, data in files.items():
            fname = f"{kind}-{_slug(name)}-{gen}-{key}"
            _write_atomic(private / fname, data, sync_dir=False)
            rec["files"][key] = fname
            rec["sha256"][key] = hashlib.sha256(data).hexdigest()
        return rec

    def _commit(self, gen: int, entries: dict) -> None:
        _write_index(self.path, gen, entries)  # the switch: one rename
        self._gen, self._entries = gen, entries

    def _delete_files(self, private: Path, recs) -> None:
        for rec in recs:
            for fname in rec["files"].values():
                (private / fname).unlink(missing_ok=True)
        fsync_dir(private)

    def install(self, kind: str, name: str, files: dict[str, bytes]) -> dict:
        """Add or atomically replace an entry; returns it with its local URLs."""
        _check_kind(kind)
        _check_name(name)
        if not files or not all(
            isinstance(k, str) and _FILE_KEY.fullmatch(k) and isinstance(v, bytes)
            for k, v in files.items()
        ):
            raise CredentialError(f"invalid files for {kind} {name}")
        gen = self._gen + 1
        rec = self._write_files(self.private, kind, name, gen, files)
        fsync_dir(self.private)  # the new files exist before the index names them
        old = self._entries.get((kind, name))
        self._commit(gen, {**self._entries, (kind, name): rec})
        if old is not None:
            self._delete_files(self.private, [old])
        return self._public(rec)

    def remove(self, kind: str, name: str) -> bool:
        old = self._entries.get((kind, name))
        if old is None:
            return False
        self._commit(self._gen, {k: v for k, v in self._entries.items() if k != (kind, name)})
        self._delete_files(self.private, [old])
        return True

    def relocate(self, location: str) -> None:
        """Move every entry to a new location: copy (fresh generations), write the new index,
        switch, delete the old index and then the old files. Whatever the new location held
        before is replaced. After a crash at least one location holds every entry whole; once
        the old index is gone only the new location does, so the caller should persist the new
        `cmp cert-store location` as soon as this returns."""
        new_location, new_path = self._resolve(location)
        if new_path.resolve() == self.path.resolve():
            self.location = new_location
            return
        new_private = new_path / "private"
        for a, b in ((new_path, self.private), (self.path, new_private)):
            if a.resolve() == b.resolve() or b.resolve() in a.resolve().parents:
                raise CredentialError(f"cert-store location {location} overlaps the current one")
        contents = {
            k: {f: self.read(*k, f) for f in rec["files"]} for k, rec in self._entries.items()
        }
        dest_gen, dest_entries = _open_dir(new_path)
        gen = max(self._gen, dest_gen)
        moved = {}
        for (kind, name), files in contents.items():
            gen += 1  # above anything at either location, so no file name is reused
            moved[(kind, name)] = self._write_files(new_private, kind, name, gen, files)
        fsync_dir(new_private)
        _write_index(new_path, gen, moved)
        old_path, old_private, old_entries = self.path, self.private, self._entries
        self.location, self.path, self.private = new_location, new_path, new_private
        self._gen, self._entries = gen, moved
        # The old index goes first: an index must never name a file that is already gone.
        (old_path / INDEX).unlink(missing_ok=True)
        fsync_dir(old_path)
        self._delete_files(old_private, old_entries.values())
        self._delete_files(new_private, dest_entries.values())
        for d in (old_private, old_path):  # tidy up if nothing else lives there
            if d not in self.roots.values():
                try:
                    d.rmdir()
                except OSError:
                    pass
