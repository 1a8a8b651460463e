"""A loopback TLS terminator in front of a walstore, for the client suites.

Why this exists: walstore does not serve TLS yet (it is planned), but some
clients only show their real-world behaviour over HTTPS:

* pgBackRest always wraps its S3 connection in TLS (`storageS3New` creates
  `tlsClientNew(sckClientNew(...))` unconditionally; `repo1-storage-verify-tls=n`
  only skips verification, it still speaks TLS).
* botocore sends flexible checksums as aws-chunked trailers
  (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`) only when the endpoint is https; over
  plain http it signs the payload and sends the checksum as a header instead
  (`botocore.httpchecksum.resolve_request_checksum_algorithm`).

So a test makes its own throw-away CA and server certificate with the
`openssl` CLI, and the client verifies the proxy against that CA (nothing is
weakened on the client side). The proxy listens on 127.0.0.1 with an ephemeral
port and forwards bytes unchanged to walstore on 127.0.0.1; it does not parse
HTTP, so the `Host` header the client signed reaches walstore as sent.
"""
from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import threading
from pathlib import Path

_OPENSSL_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def make_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """Creates `ca.crt`, `server.crt` and `server.key` in `directory` (valid 2 days).

    The server certificate names 127.0.0.1 both as an IP SAN (checked by Python
    and most clients) and as a DNS SAN and CN (pgBackRest 2.45 compares the host
    string with DNS names and the common name only).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt, ext = directory / "server.key", directory / "server.csr", directory / "server.crt", directory / "ext.cnf"
    ext.write_text(_OPENSSL_EXT)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2",
        "-subj", "/CN=walstore test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext))
    os.chmod(key, 0o600)
    return ca_crt, crt, key


class TlsProxy:
    """TLS on 127.0.0.1:<ephemeral> → plain TCP to 127.0.0.1:`upstream_port`.

    Runs an asyncio loop in a daemon thread; `stop()` closes the listener and
    every open connection.
    """

    def __init__(self, upstream_port: int, cert: Path, key: Path):
        self.upstream_port = upstream_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="tls-proxy")
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "TlsProxy":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = fut.result(timeout)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx,
                                                  ssl_handshake_timeout=10)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task:
            self._tasks.add(task)
        try:
            u_reader, u_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.upstream_port), timeout=10)
        except (OSError, asyncio.TimeoutError):
            c_writer.close()
            return

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(256 * 1024):
                    w.write(data)
                    await w.drain()
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                # HTTP/1.1 needs no half-close: when either side is done, end both.
                for x in (w, c_writer, u_writer):
                    x.close()

        try:
            await asyncio.gather(pump(c_reader, u_writer), pump(u_reader, c_writer))
        finally:
            if task:
                self._tasks.discard(task)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
