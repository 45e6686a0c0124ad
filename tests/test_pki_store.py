"""supervisor.pki.store (the certificate store on disk) and supervisor.pki.cipher."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_pki_credentials import key_pem, make_cert

from supervisor.cli.tokens import needs_quotes, tokenize
from supervisor.pki import store as store_module
from supervisor.pki.cipher import ConfigCipher
from supervisor.pki.credentials import (
    CredentialError,
    check_pair,
    load_certificate,
    load_private_key,
)
from supervisor.pki.store import Store

ROOT = Path(store_module.__file__).resolve().parents[2]  # the checkout under test
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
}


def _pair(cn: str) -> dict[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())  # fast; the store does not care
    cert = make_cert(cn, key)
    return {"cert.pem": cert.public_bytes(serialization.Encoding.PEM), "key.pem": key_pem(key)}


PAIR_A, PAIR_B, PAIR_C = _pair("a.example"), _pair("b.example"), _pair("c.example")


@pytest.fixture
def roots(tmp_path) -> dict[str, Path]:
    r = {dev: tmp_path / dev.strip("/") for dev in ("/flash", "/usb1", "/hd-raid")}
    for p in r.values():
        p.mkdir()
    return r


def refused(fn, *args) -> str:
    with pytest.raises(CredentialError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def outside(root: Path, store: Path) -> set[Path]:
    """Everything under root except the store directory and its contents."""
    return {p for p in root.rglob("*") if p != store and store not in p.parents}


# --- basics ---------------------------------------------------------------------------------------


def test_install_read_replace_remove(roots):
    s = Store(roots)
    assert s.location == "/flash/cert-store" and s.path == roots["/flash"] / "cert-store"
    e = s.install("certificate", "segw", PAIR_A)
    assert e["kind"] == "certificate" and e["name"] == "segw"
    assert e["urls"]["key.pem"] == f"file:/flash/cert-store/private/{e['files']['key.pem']}"
    assert e["files"]["cert.pem"] == f"certificate-segw-{e['generation']}-cert.pem"
    assert s.local_url("certificate", "segw", "key.pem") == e["urls"]["key.pem"]
    assert s.read("certificate", "segw", "key.pem") == PAIR_A["key.pem"]
    s.install("ca-certificate", "lab-ca", {"cert.pem": PAIR_C["cert.pem"]})
    assert set(s.entries()) == {("certificate", "segw"), ("ca-certificate", "lab-ca")}
    assert set(s.entries("ca-certificate")) == {("ca-certificate", "lab-ca")}

    e2 = s.install("certificate", "segw", PAIR_B)  # replace
    assert e2["generation"] > e["generation"]
    assert s.read("certificate", "segw", "cert.pem") == PAIR_B["cert.pem"]
    assert sorted(os.listdir(s.private)) == sorted(
        [*e2["files"].values(), *s.entries()[("ca-certificate", "lab-ca")]["files"].values()]
    )

    # a fresh Store sees the same thing
    again = Store(roots)
    assert again.entries() == s.entries()
    assert again.read("certificate", "segw", "key.pem") == PAIR_B["key.pem"]

    assert s.remove("certificate", "segw") is True
    assert s.remove("certificate", "segw") is False
    assert set(s.entries()) == {("ca-certificate", "lab-ca")}
    assert not any(f.startswith("certificate-") for f in os.listdir(s.private))
    assert "no certificate named segw" in refused(s.read, "certificate", "segw", "key.pem")
    assert "has no key.pem" in refused(s.read, "ca-certificate", "lab-ca", "key.pem")
    assert set(Store(roots).entries()) == {("ca-certificate", "lab-ca")}


def test_modes(roots):
    old = os.umask(0)  # even a careless umask must not widen anything
    try:
        s = Store(roots)
        s.install("certificate", "segw", PAIR_A)
        s.install("csr", "req", {"csr.pem": b"csr", "key.pem": PAIR_B["key.pem"]})
    finally:
        os.umask(old)
    assert mode(s.private) == 0o700
    files = list(s.private.iterdir())
    assert len(files) == 4 and all(mode(f) == 0o600 for f in files)
    assert mode(s.path / "index.json") == 0o600


def test_index_holds_no_key_material(roots):
    s = Store(roots)
    s.install("certificate", "segw", PAIR_A)
    raw = (s.path / "index.json").read_text()
    for data in (*PAIR_A.values(),):
        body = b"".join(data.splitlines()[1:-1]).decode()
        assert not any(body[i : i + 16] in raw for i in range(0, len(body) - 16, 8))
    doc = json.loads(raw)
    (entry,) = doc["entries"]
    assert set(entry) == {"kind", "name", "generation", "files", "sha256"}


@pytest.mark.parametrize(
    "name",
    ["../../etc/x", "..", "/", "a/b", "a\\b", ".hidden", "名前", "with space", "x" * 256, "-"],
)
def test_names_cannot_escape(roots, tmp_path, name):
    s = Store(roots)
    before = outside(tmp_path, s.path)
    e = s.install("certificate", name, PAIR_A)
    for fname in e["files"].values():
        p = s.private / fname
        assert p.resolve().parent == s.private.resolve() and "/" not in fname
    assert outside(tmp_path, s.path) == before  # nothing written elsewhere
    assert s.read("certificate", name, "cert.pem") == PAIR_A["cert.pem"]
    assert (("certificate", name)) in Store(roots).entries()


def test_names_that_differ_only_in_unsafe_characters_do_not_collide(roots):
    s = Store(roots)
    s.install("certificate", "a/b", PAIR_A)
    s.install("certificate", "a_b", PAIR_B)
    s.install("certificate", "a/b", PAIR_C)  # replacing one must not touch the other
    assert s.read("certificate", "a_b", "key.pem") == PAIR_B["key.pem"]
    assert Store(roots).read("certificate", "a/b", "key.pem") == PAIR_C["key.pem"]


def test_bad_arguments(roots):
    s = Store(roots)
    assert "name must be 1-256" in refused(s.install, "certificate", "", PAIR_A)
    assert "name must be 1-256" in refused(s.install, "certificate", "x" * 257, PAIR_A)
    assert "non-printable" in refused(s.install, "certificate", "a\nb", PAIR_A)
    assert "unknown store entry kind" in refused(s.install, "crl", "x", PAIR_A)
    for files in ({}, {"../x": b"1"}, {"key.pem": "text"}, {"Key.pem": b"1"}):
        assert "invalid files" in refused(s.install, "certificate", "x", files)
    assert s.entries() == {} and list(s.private.iterdir()) == []


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/nvram/certs", "must be under /flash, /hd-raid, /usb1"),
        ("flash/certs", "invalid cert-store location"),
        ("/flash/../x", "invalid cert-store location"),
        ("/flash//x", "invalid cert-store location"),
        ("/", "invalid cert-store location"),
        ("/flash/" + "x" * 256, "invalid cert-store location"),
    ],
)
def test_bad_locations(roots, location, expected):
    assert expected in refused(Store, roots, location)


def test_locations(roots):
    assert Store(roots, "/usb1/certs/").path == roots["/usb1"] / "certs"
    assert Store(roots, "/usb1/certs/").location == "/usb1/certs"
    assert Store(roots, "/hd-raid").path == roots["/hd-raid"]
    shutil.rmtree(roots["/usb1"])
    assert "storage device /usb1 is not available" in refused(Store, roots, "/usb1/x")


def test_garbage_collection(roots):
    s = Store(roots)
    e = s.install("certificate", "segw", PAIR_A)
    stray = [
        s.private / "certificate-segw-99-key.pem",  # new files whose index never landed
        s.private / ".tmp-abc123",
        s.path / ".tmp-index",
    ]
    for p in stray:
        p.write_bytes(b"x")
    (s.path / "README").write_text("not ours")
    (s.private / "subdir").mkdir()
    s2 = Store(roots)
    assert not any(p.exists() for p in stray)
    assert (s.path / "README").exists() and (s.private / "subdir").is_dir()
    assert sorted(os.listdir(s.private)) == sorted([*e["files"].values(), "subdir"])
    assert s2.read("certificate", "segw", "key.pem") == PAIR_A["key.pem"]


def test_corrupt_index_is_refused_and_nothing_deleted(roots):
    s = Store(roots)
    s.install("certificate", "segw", PAIR_A)
    before = sorted(os.listdir(s.private))
    for bad in (
        b"{",
        b"[]",
        b'{"version": 2, "generation": 1, "entries": []}',
        json.dumps(
            {
                "version": 1,
                "generation": 1,
                "entries": [
                    {
                        "kind": "certificate",
                        "name": "x",
                        "generation": 1,
                        "files": {"key.pem": "../../x"},
                        "sha256": {"key.pem": "0"},
                    }
                ],
            }
        ).encode(),
    ):
        (s.path / "index.json").write_bytes(bad)
        assert "index" in refused(Store, roots) and "corrupt" in refused(Store, roots)
        assert sorted(os.listdir(s.private)) == before


def test_read_detects_damaged_files(roots):
    s = Store(roots)
    e = s.install("certificate", "segw", PAIR_A)
    (s.private / e["files"]["key.pem"]).write_bytes(b"damaged")
    assert "is corrupt in the store" in refused(s.read, "certificate", "segw", "key.pem")
    (s.private / e["files"]["key.pem"]).unlink()
    assert "is missing from the store" in refused(s.read, "certificate", "segw", "key.pem")


# --- relocation -----------------------------------------------------------------------------------


def test_relocate(roots):
    s = Store(roots)
    s.install("certificate", "segw", PAIR_A)
    s.install("ca-certificate", "lab-ca", {"cert.pem": PAIR_C["cert.pem"]})
    old_path = s.path
    s.relocate("/usb1/certs")
    assert s.location == "/usb1/certs" and s.path == roots["/usb1"] / "certs"
    assert set(s.entries()) == {("certificate", "segw"), ("ca-certificate", "lab-ca")}
    assert s.read("certificate", "segw", "key.pem") == PAIR_A["key.pem"]
    assert s.local_url("certificate", "segw", "key.pem").startswith("file:/usb1/certs/private/")
    assert mode(s.private) == 0o700 and all(mode(f) == 0o600 for f in s.private.iterdir())
    assert not old_path.exists()  # emptied and tidied away
    assert (
        Store(roots, "/usb1/certs").read("ca-certificate", "lab-ca", "cert.pem")
        == PAIR_C["cert.pem"]
    )
    assert Store(roots).entries() == {}
    # and changes after the move land at the new location
    s.install("certificate", "segw", PAIR_B)
    assert Store(roots, "/usb1/certs").read("certificate", "segw", "cert.pem") == PAIR_B["cert.pem"]


def test_relocate_onto_an_existing_store_replaces_it(roots):
    other = Store(roots, "/hd-raid/certs")
    other.install("certificate", "stale", PAIR_B)
    other.install("certificate", "segw", PAIR_B)
    s = Store(roots)
    s.install("certificate", "segw", PAIR_A)
    s.relocate("/hd-raid/certs")
    fresh = Store(roots, "/hd-raid/certs")
    assert set(fresh.entries()) == {("certificate", "segw")}
    assert fresh.read("certificate", "segw", "key.pem") == PAIR_A["key.pem"]
    assert sorted(os.listdir(fresh.private)) == sorted(
        fresh.entries()[("certificate", "segw")]["files"].values()
    )


def test_relocate_same_place_and_overlaps(roots):
    s = Store(roots)
    s.install("certificate", "segw", PAIR_A)
    s.relocate("/flash/cert-store/")
    assert s.read("certificate", "segw", "key.pem") == PAIR_A["key.pem"]
    assert "overlaps" in refused(s.relocate, "/flash/cert-store/private/x")
    root_store = Store(roots, "/flash")
    assert "overlaps" in refused(root_store.relocate, "/flash/private")
    assert "must be under" in refused(s.relocate, "/nvram/x")
    assert s.location == "/flash/cert-store"
    s.relocate("/flash")  # the parent directory is fine
    assert Store(roots, "/flash").read("certificate", "segw", "key.pem") == PAIR_A["key.pem"]
    assert roots["/flash"].is_dir()


# --- crash safety ---------------------------------------------------------------------------------

# The child runs one store operation and SIGKILLs itself just before its N-th file-system call
# (open, fsync, rename, unlink): a `kill -9` at every step of the operation, deterministically.
CHILD = r"""
import json, os, signal, sys
from pathlib import Path
from supervisor.pki.store import Store

roots = {k: Path(v) for k, v in json.loads(sys.argv[1]).items()}
op, kill_at = sys.argv[2], int(sys.argv[3])
files = {k: bytes.fromhex(v) for k, v in json.loads(sys.argv[4]).items()}
store = Store(roots)
calls = 0

def armed(real):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

for name in ("open", "fsync", "replace", "rename", "unlink", "link", "rmdir"):
    setattr(os, name, armed(getattr(os, name)))
if op == "install":
    store.install("certificate", "segw", files)
elif op == "remove":
    store.remove("certificate", "segw")
else:
    store.relocate("/usb1/certs")
print("completed", flush=True)
"""


def _run_child(roots, op: str, kill_at: int, files: dict[str, bytes]) -> bool:
    """True if the operation completed, False if the child was killed part-way."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            json.dumps({k: str(v) for k, v in roots.items()}),
            op,
            str(kill_at),
            json.dumps({k: v.hex() for k, v in files.items()}),
        ],
        capture_output=True,
        timeout=60,
        env=CHILD_ENV,
    )
    if proc.returncode == -signal.SIGKILL:
        return False
    assert proc.returncode == 0 and b"completed" in proc.stdout, proc.stderr.decode()
    return True


def _content(s: Store, name: str = "segw") -> dict[str, bytes] | None:
    """The entry's files, checked whole: present, matching the index digests, cert and key
    belonging together; and nothing in private/ that the index does not name."""
    named = {f for e in s.entries().values() for f in e["files"].values()}
    assert set(os.listdir(s.private)) == named
    assert not any(p.name.startswith(".tmp-") for p in s.path.iterdir())
    if ("certificate", name) not in s.entries():
        return None
    files = {f: s.read("certificate", name, f) for f in ("cert.pem", "key.pem")}
    check_pair(load_certificate(files["cert.pem"], "pem"), load_private_key(files["key.pem"]))
    return files


@pytest.mark.parametrize("op", ["install", "remove", "relocate"])
def test_kill_at_every_step(roots, tmp_path, op):
    outcomes = []
    for kill_at in range(1, 60):
        for p in roots.values():  # a fresh store holding PAIR_A each time
            shutil.rmtree(p)
            p.mkdir()
        Store(roots).install("certificate", "segw", PAIR_A)
        completed = _run_child(roots, op, kill_at, PAIR_B)
        old, new = Store(roots), Store(roots, "/usb1/certs")
        if op == "install":
            got = _content(old)
            assert got in (PAIR_A, PAIR_B), f"mixed entry after kill at step {kill_at}"
        elif op == "remove":
            got = _content(old)
            assert got in (PAIR_A, None), f"mixed entry after kill at step {kill_at}"
        else:
            # the old location stays whole until the new one is; each is whole or empty
            at_old, at_new = _content(old), _content(new)
            assert {repr(at_old), repr(at_new)} <= {repr(PAIR_A), "None"}
            assert PAIR_A in (at_old, at_new), f"entry lost after kill at step {kill_at}"
            got = "new" if at_new else "old"
        outcomes.append(repr(got))
        if completed:
            break
    else:
        pytest.fail("the operation never completed within 60 steps")
    assert len(set(outcomes)) == 2, "both the old and the new state should have been seen"


def test_kill_at_random_times(roots, tmp_path):
    """Installs in a loop (A, B, A, ...) killed with SIGKILL at random moments."""
    loop = tmp_path / "loop.py"
    loop.write_text(
        "import json, sys\n"
        "from pathlib import Path\n"
        "from supervisor.pki.store import Store\n"
        "roots = {k: Path(v) for k, v in json.loads(sys.argv[1]).items()}\n"
        "pairs = [{k: bytes.fromhex(v) for k, v in p.items()} for p in json.loads(sys.argv[2])]\n"
        "store = Store(roots)\n"
        "print('ready', flush=True)\n"
        "i = 0\n"
        "while True:\n"
        "    store.install('certificate', 'segw', pairs[i % 2])\n"
        "    i += 1\n"
    )
    pairs = json.dumps([{k: v.hex() for k, v in p.items()} for p in (PAIR_A, PAIR_B)])
    rnd = random.Random(1234)
    seen = set()
    for _ in range(30):
        proc = subprocess.Popen(
            [sys.executable, str(loop), json.dumps({k: str(v) for k, v in roots.items()}), pairs],
            stdout=subprocess.PIPE,
            env=CHILD_ENV,
        )
        try:
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rnd.uniform(0, 0.05))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
        got = _content(Store(roots))
        assert got in (PAIR_A, PAIR_B, None)
        seen.add(repr(got))
    assert len(seen) >= 2  # the kills did land at different points


# --- the configuration cipher -------------------------------------------------------------------


def test_cipher_round_trip(tmp_path):
    path = tmp_path / "flash" / "config.key"
    c = ConfigCipher.load_or_create(path)
    assert mode(path) == 0o600 and path.stat().st_size == 32
    for plaintext in (b"", b"x", PAIR_A["key.pem"], os.urandom(8191)):
        token = c.encrypt(plaintext)
        assert c.decrypt(token) == plaintext
        assert [t.text for t in tokenize(token)] == [token] and not needs_quotes(token)
    assert c.encrypt(b"x") != c.encrypt(b"x")  # fresh nonce each time
    # the same file gives the same key: a saved configuration replays after a restart
    assert ConfigCipher.load_or_create(path).decrypt(c.encrypt(b"again")) == b"again"
    assert "<key hidden>" in repr(c)


UNDECRYPTABLE = "encrypted key data cannot be decrypted with this chassis's configuration key"


def test_cipher_refuses_foreign_and_tampered_tokens(tmp_path):
    c = ConfigCipher.load_or_create(tmp_path / "a.key")
    other = ConfigCipher.load_or_create(tmp_path / "b.key")
    token = c.encrypt(PAIR_A["key.pem"])
    assert refused(other.decrypt, token) == UNDECRYPTABLE
    flip = {"A": "B", "-": "_"}
    tampered = [
        token[:-1],
        token + "A",
        token + "=",
        token.replace("v1-", "v2-"),
        token[3:],
        "",
        "v1-",
        "v1-AAAA",
        "v1-" + "é" * 40,
        token[:20] + "!" + token[20:],
    ]
    for i in range(3, len(token), 7):  # one character changed, all along the token
        ch = token[i]
        tampered.append(token[:i] + flip.get(ch, "A") + token[i + 1 :])
    for bad in tampered:
        assert refused(c.decrypt, bad) == UNDECRYPTABLE, bad


def test_cipher_key_file_problems(tmp_path):
    path = tmp_path / "config.key"
    path.write_bytes(b"short")
    assert "is corrupt" in refused(ConfigCipher.load_or_create, path)
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    ConfigCipher.load_or_create(path)
    assert mode(path) == 0o600  # tightened


def test_cipher_first_boot_race(tmp_path):
    """Supervisors creating the key at the same moment all end up with the same key."""
    path = tmp_path / "config.key"
    code = (
        "import sys, time\n"
        "from supervisor.pki.cipher import ConfigCipher\n"
        "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
        "print(ConfigCipher.load_or_create(sys.argv[1]).encrypt(b'race'))\n"
    )
    start = str(time.time() + 1.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path), start], stdout=subprocess.PIPE, env=CHILD_ENV
        )
        for _ in range(6)
    ]
    tokens = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        tokens.append(out.decode().strip())
    c = ConfigCipher.load_or_create(path)
    assert all(c.decrypt(t) == b"race" for t in tokens)
    assert os.listdir(tmp_path) == ["config.key"]  # no temp files left behind
