"""Test certificates made with the openssl command line: a CA, server
certificates it signs, and SSL contexts to serve them over loopback.

EC keys, so that making them costs milliseconds, not the seconds RSA takes.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Names a certificate for the loopback server holds, as openssl's subjectAltName.
LOOPBACK_NAMES = "IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """What an HTTPS server presenting this certificate needs."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate, PEM
    ca_key: Path
    server: KeyPair  # for 127.0.0.1 and localhost, signed by the CA
    other_name: KeyPair  # for other.example only, signed by the CA: a name mismatch on loopback
    client: KeyPair  # a client certificate (mTLS), signed by the CA


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(name: str, cwd: Path) -> None:
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key", cwd=cwd)


def issue(directory: Path, name: str, subject_alt_names: str) -> KeyPair:
    """A certificate and key for `name`, signed by the CA in `directory`."""
    _key(name, directory)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=directory)
    (directory / f"{name}.ext").write_text(f"subjectAltName={subject_alt_names}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=directory)  # fmt: skip
    return KeyPair(directory / f"{name}.crt", directory / f"{name}.key")


def make_pki(directory: Path) -> Pki:
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed to make test certificates")
    _key("ca", directory)
    openssl("req", "-x509", "-new", "-key", "ca.key", "-days", "2", "-subj", "/CN=backup-exporter test CA",
            "-out", "ca.crt", cwd=directory)  # fmt: skip
    return Pki(
        ca=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server=issue(directory, "server", LOOPBACK_NAMES),
        other_name=issue(directory, "other", "DNS:other.example"),
        client=issue(directory, "client", LOOPBACK_NAMES),
    )
