"""pytest fixtures shared by the client suites."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Walstore, walg_exe  # noqa: E402


@pytest.fixture
def server(tmp_path):
    """A walstore with bucket `test`, region de01."""
    s = Walstore(data_dir=tmp_path / "data", buckets=["test"]).start()
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

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )
