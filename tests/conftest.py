"""pytest fixtures shared by the client suites."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Walstore, walg_exe  # noqa: E402
from tlscerts import make_ca_and_cert  # noqa: E402


@pytest.fixture
def server(tmp_path):
    """A walstore with bucket `test`, region de01."""
    s = Walstore(data_dir=tmp_path / "data", buckets=["test"]).start()
    yield s
    code = s.stop()
    assert code == 0, f"walstore exited with {code}; log {s.log_path}"


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory):
    """(ca.crt, server.crt, server.key): a test CA and a certificate for 127.0.0.1 it signed."""
    return make_ca_and_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tmp_path, tls_material):
    """Like `server`, but serving https natively with a certificate from the test CA."""
    ca, cert, key = tls_material
    s = Walstore(data_dir=tmp_path / "data-tls", buckets=["test"], tls_cert=cert, tls_key=key, ca=ca).start()
    yield s
    code = s.stop()
    assert code == 0, f"walstore exited with {code}; log {s.log_path}"


@pytest.fixture
def walg():
    exe = walg_exe()
    if exe is None:
        pytest.skip("WAL-G v3.0.9 is not installed (the Go module proxy refused it); set WALG_BIN to run these tests")
    return exe


@pytest.fixture
def s3(server):
    import boto3

    return boto3.client("s3", **server.boto3_kwargs())
