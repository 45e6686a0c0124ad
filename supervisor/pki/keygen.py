"""`crypto rsa-keygen`: RSA key generation, StarOS subject-name strings and PKCS#10 requests.

`generate_rsa` and `build_csr` are slow (principle 9): the supervisor runs them in its process
pool, so they are top-level functions taking and returning plain bytes/str.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from supervisor.pki.credentials import CredentialError, load_private_key

MODULI = (512, 1024, 2048, 4096)
ID_TYPES = ("fqdn", "ip", "rfc822-addr")
MAX_TEXT = 256  # names, ids and subject strings, from the StarOS reference

_HASHES = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha1": hashes.SHA1,
}


def _pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_rsa(modulus: int) -> bytes:
    """A new RSA key as unencrypted PKCS#8 PEM.

    cryptography refuses keys under 1024 bits, but StarOS offers 512, so a 512-bit key comes
    from the OpenSSL command line instead (OpenSSL 3 still generates them) and is checked to be
    what we asked for. Without a willing openssl the command fails with a clear error rather
    than silently giving a bigger key.
    """
    if modulus not in MODULI:
        raise CredentialError(f"unsupported RSA modulus {modulus} (512, 1024, 2048 or 4096)")
    if modulus >= 1024:
        return _pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=modulus))
    return _generate_rsa_openssl(modulus)


def _generate_rsa_openssl(modulus: int) -> bytes:
    fail = f"cannot generate a {modulus}-bit RSA key"
    exe = shutil.which("openssl")
    if exe is None:
        raise CredentialError(f"{fail}: the openssl command is not installed")
    argv = [exe, "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{modulus}"]
    try:
        # The key travels over a pipe, never a file. stderr holds only progress dots and errors.
        proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CredentialError(f"{fail}: openssl failed to run ({type(e).__name__})") from None
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise CredentialError(
            f"{fail}: openssl refused ({last[-1][:120] if last else 'no reason'})"
        )
    try:
        key = load_private_key(proc.stdout)
    except CredentialError as e:
        raise CredentialError(f"{fail}: openssl produced an unusable key ({e})") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != modulus:
        raise CredentialError(f"{fail}: openssl produced a key of the wrong size")
    return _pkcs8(key)  # re-serialized so every modulus comes out in the same format


def weak_warning(modulus: int) -> str | None:
    if modulus < 2048:
        return f"Warning: a {modulus}-bit RSA key is weak; use 2048 bits or more"
    return None


# --- subject names -----------------------------------------------------------------------------

# attribute -> (OID, upper bound from RFC 5280 appendix A, character set)
_ATTRS = {
    "C": (NameOID.COUNTRY_NAME, 2, "printable"),
    "ST": (NameOID.STATE_OR_PROVINCE_NAME, 128, "utf8"),
    "L": (NameOID.LOCALITY_NAME, 128, "utf8"),
    "O": (NameOID.ORGANIZATION_NAME, 64, "utf8"),
    "OU": (NameOID.ORGANIZATIONAL_UNIT_NAME, 64, "utf8"),
    "CN": (NameOID.COMMON_NAME, 64, "utf8"),
    "emailAddress": (NameOID.EMAIL_ADDRESS, 255, "ia5"),
    "serialNumber": (NameOID.SERIAL_NUMBER, 64, "printable"),
    "DC": (NameOID.DOMAIN_COMPONENT, 63, "ia5"),
}
_ATTR_BY_UPPER = {k.upper(): k for k in _ATTRS}
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")  # ASN.1 PrintableString


def _split(text: str, sep: str) -> list[str]:
    """Split on unescaped `sep`; a backslash escapes the next character."""
    parts, buf, chars = [], [], iter(text)
    for c in chars:
        if c == "\\":
            buf.append(next(chars, "\\"))
        elif c == sep:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
    parts.append("".join(buf))
    return parts


def parse_subject(text: str) -> x509.Name:
    """A subject-name string in either StarOS/OpenSSL form, attributes in the order written:

        /C=US/O=Cisco/CN=segw.example.net     (slash form; `\\/` is a literal slash)
        C=US, O=Cisco, CN=segw                (comma form; `\\,` is a literal comma)

    Attribute names are case-insensitive; values are trimmed. Multi-valued RDNs are not
    supported (`+` is an ordinary character).
    """
    if not text.strip():
        raise CredentialError("empty subject name")
    if len(text) > MAX_TEXT:
        raise CredentialError(f"subject name is {len(text)} characters; the limit is {MAX_TEXT}")
    body = text.strip()
    parts = _split(body[1:], "/") if body.startswith("/") else _split(body, ",")
    attrs = []
    for part in parts:
        if not part.strip():
            raise CredentialError("empty component in subject name")
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            raise CredentialError(f"subject component {part.strip()!r} has no '='")
        attr = _ATTR_BY_UPPER.get(key.upper())
        if attr is None:
            raise CredentialError(
                f"unknown subject attribute {key!r} (supported: {', '.join(_ATTRS)})"
            )
        attrs.append(_attribute(attr, value))
    return x509.Name(attrs)


def _attribute(attr: str, value: str) -> x509.NameAttribute:
    oid, limit, charset = _ATTRS[attr]
    if not value:
        raise CredentialError(f"subject attribute {attr} is empty")
    if len(value) > limit:
        raise CredentialError(
            f"subject attribute {attr} is {len(value)} characters; the limit is {limit}"
        )
    try:
        value.encode()
    except UnicodeEncodeError:
        raise CredentialError(f"subject attribute {attr} is not valid text") from None
    if not value.isprintable():
        raise CredentialError(f"subject attribute {attr} contains non-printable characters")
    if charset == "printable" and not _PRINTABLE.fullmatch(value):
        raise CredentialError(f"subject attribute {attr} must use letters, digits and ' ()+,-./:=?")
    if charset == "ia5" and not value.isascii():
        raise CredentialError(f"subject attribute {attr} must be ASCII")
    if attr == "C" and not (len(value) == 2 and value.isalpha()):
        raise CredentialError("subject attribute C must be a two-letter country code")
    return x509.NameAttribute(oid, value)


# --- certificate requests ----------------------------------------------------------------------

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _fqdn(value: str) -> str:
    name = value.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise CredentialError(f"id {value!r} is not a valid FQDN")
    return name


def _san(id_type: str, value: str) -> x509.GeneralName:
    if not 1 <= len(value) <= MAX_TEXT:
        raise CredentialError(f"id must be 1-{MAX_TEXT} characters")
    if id_type == "fqdn":
        return x509.DNSName(_fqdn(value))
    if id_type == "ip":
        try:
            if "%" in value:  # a scoped IPv6 address cannot go in a certificate
                raise ValueError
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            raise CredentialError(f"id {value!r} is not an IPv4 or IPv6 address") from None
    if id_type == "rfc822-addr":
        local, at, domain = value.rpartition("@")
        if (
            not at
            or not local
            or "@" in local
            or not value.isascii()
            or not value.isprintable()
            or " " in value
        ):
            raise CredentialError(f"id {value!r} is not an e-mail address")
        return x509.RFC822Name(f"{local}@{_fqdn(domain)}")
    raise CredentialError(f"unknown id-type {id_type!r} ({', '.join(ID_TYPES)})")


def build_csr(
    key_pem: bytes, subject: str, id_type: str, id_value: str, hash_name: str = "sha256"
) -> bytes:
    """A PEM PKCS#10 request: `subject` plus the id as subjectAltName. SHA-1 only on request."""
    if hash_name not in _HASHES:
        raise CredentialError(f"unsupported hash {hash_name!r} ({', '.join(_HASHES)})")
    key = load_private_key(key_pem)
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_subject(subject))
        .add_extension(x509.SubjectAlternativeName([_san(id_type, id_value)]), critical=False)
    )
    if hash_name != "sha1":
        return builder.sign(key, _HASHES[hash_name]()).public_bytes(serialization.Encoding.PEM)
    # cryptography no longer signs with SHA-1, but old CAs still want it: sign the same
    # CertificationRequestInfo ourselves and frame it (RFC 2986 section 4.2).
    info = builder.sign(key, hashes.SHA256()).tbs_certrequest_bytes
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(info, padding.PKCS1v15(), hashes.SHA1())
        alg = _der(0x30, _SHA1_RSA + b"\x05\x00")
    else:
        sig = key.sign(info, ec.ECDSA(hashes.SHA1()))
        alg = _der(0x30, _SHA1_ECDSA)
    der = _der(0x30, info + alg + _der(0x03, b"\x00" + sig))
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)


_SHA1_RSA = bytes.fromhex("06092a864886f70d010105")  # OID sha1WithRSAEncryption
_SHA1_ECDSA = bytes.fromhex("06072a8648ce3d0401")  # OID ecdsa-with-SHA1


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content
