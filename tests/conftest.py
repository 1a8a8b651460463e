"""pytest fixtures shared by the client suites."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import MISSING_DEPENDENCY, Walstore, in_ci, walg_exe, walg_missing  # noqa: E402
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
        pytest.skip(walg_missing())
    return exe


@pytest.fixture
def s3(server):
    import boto3

    return boto3.client("s3", **server.boto3_kwargs())


def _skip_reason(report) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, a test skipped because a real component is missing fails instead: a green CI
    run must mean every client (WAL-G, PostgreSQL, pgBackRest, boto3, the AWS CLI) really ran."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and MISSING_DEPENDENCY in _skip_reason(report):
        report.outcome = "failed"
        report.longrepr = f"{_skip_reason(report)} (CI=true: a missing dependency fails the run, not a skip)"


def pytest_terminal_summary(terminalreporter):
    """Each skip reason once, with how many tests it skipped (missing dependencies first)."""
    reasons: dict[str, int] = {}
    for rep in terminalreporter.stats.get("skipped", []):
        reason = _skip_reason(rep)
        reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        return
    terminalreporter.section("skipped, by reason")
    for reason, n in sorted(reasons.items(), key=lambda kv: (MISSING_DEPENDENCY not in kv[0], kv[0])):
        terminalreporter.write_line(f"{n:4d} × {reason}")
