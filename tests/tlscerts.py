"""Throw-away TLS material for the https tests: a test CA and server certificates.

walstore serves TLS itself (``serve --tls-cert CERT.pem --tls-key KEY.pem``).
The tests never weaken a client to talk to it: each suite makes its own CA with
the ``openssl`` CLI, gives walstore a server certificate signed by that CA,
and every client verifies the server against that CA (boto3 ``verify=``, the
AWS CLI's ``--ca-bundle``, pgBackRest's ``repo1-storage-ca-file``, WAL-G's
``WALG_S3_CA_CERT_FILE``, Python's ``ssl`` with ``cafile=``).

Why https matters to the client suites at all:

* pgBackRest always wraps its S3 connection in TLS (`storageS3New` creates
  `tlsClientNew(sckClientNew(...))` unconditionally; `repo1-storage-verify-tls=n`
  only skips verification, it still speaks TLS).
* botocore sends flexible checksums as aws-chunked trailers
  (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`) only when the endpoint is https; over
  plain http it signs the payload and sends the checksum as a header instead
  (`botocore.httpchecksum.resolve_request_checksum_algorithm`).
"""
from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class TestCA:
    """A CA certificate and its key (both PEM)."""

    __test__ = False  # not a pytest test class

    crt: Path
    key: Path


def make_ca(directory: Path, name: str = "walstore test CA") -> TestCA:
    """Creates `ca.crt` and `ca.key` in `directory` (valid 2 days)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = TestCA(directory / "ca.crt", directory / "ca.key")
    _openssl("req", "-x509", *_EC, "-keyout", str(ca.key), "-out", str(ca.crt), "-days", "2",
             "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(ca.key, 0o600)
    return ca


def issue_server_cert(ca: TestCA, directory: Path, name: str = "server") -> tuple[Path, Path]:
    """Signs a new key pair for 127.0.0.1/localhost with `ca`: returns (`<name>.crt`, `<name>.key`).

    The certificate names 127.0.0.1 both as an IP SAN (checked by Python, Go
    and most clients) and as a DNS SAN and CN (pgBackRest 2.45 compares the host
    string with DNS names and the common name only). Every call makes a new key
    and a new serial number.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext.cnf"
    ext.write_text(_SERVER_EXT)
    _openssl("req", *_EC, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    # A random serial per certificate (not -CAcreateserial's counter file).
    serial = "0x" + os.urandom(16).hex()
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.crt), "-CAkey", str(ca.key), "-set_serial", serial,
             "-out", str(crt), "-days", "2", "-extfile", str(ext))
    os.chmod(key, 0o600)
    return crt, key


def make_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """Creates `ca.crt`, `server.crt` and `server.key` in `directory`: (ca, cert, key)."""
    ca = make_ca(directory)
    crt, key = issue_server_cert(ca, directory)
    return ca.crt, crt, key


def pem_fingerprint(cert: Path) -> str:
    """SHA-256 of the DER form of the (first) certificate in a PEM file."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()
