"""scripts/servers.sh: loopback only by default, password auth, idempotent start, a stop that keeps the data."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import optuna
import psycopg2
import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.integration.conftest import Servers, exported

pytestmark = pytest.mark.servers

LISTEN = "0A"  # TCP state code in /proc/net/tcp


def _listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the sockets listening on `port`, read from the kernel's tables."""
    addresses = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == LISTEN and int(hex_port, 16) == port:
                # the kernel prints each 32-bit word of the address in host (little-endian) byte order
                raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
                addresses.append(ipaddress.ip_address(raw[:width]))
    return addresses


def test_both_servers_listen_on_loopback_only(servers: Servers) -> None:
    for port in (servers.pg_port, servers.mlflow_port):
        addresses = _listening(port)
        assert addresses and all(a.is_loopback for a in addresses), f"port {port} listens on {addresses}"


def test_start_again_is_a_no_op_that_prints_the_same_env(servers: Servers) -> None:
    again = servers.script("start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr and "starting" not in again.stderr
    assert exported(again.stdout) == exported(servers.script("env").stdout)
    assert exported(again.stdout)["FACETRAITS_TRACKING_URI"] == servers.tracking_uri
    assert requests.get(f"{servers.tracking_uri}/health", timeout=5).ok


def test_status_names_both_servers(servers: Servers) -> None:
    status = servers.script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"postgres: running on 127.0.0.1:{servers.pg_port}" in status.stdout
    assert f"mlflow:   running on 127.0.0.1:{servers.mlflow_port}" in status.stdout


def test_the_database_asks_for_the_password(servers: Servers) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(servers.libpq_uri("optuna"), password="not-the-password", connect_timeout=5)


def test_stop_keeps_studies_and_runs_for_the_next_start(servers: Servers) -> None:
    optuna.create_study(study_name="kept", storage=servers.storage).add_trial(
        optuna.trial.create_trial(value=0.5, params={}, distributions={})
    )
    experiment = MlflowClient(servers.tracking_uri).create_experiment("kept")
    stopped = servers.script("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert servers.script("status").returncode == 3
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{servers.tracking_uri}/health", timeout=5)
    started = servers.script("start")
    assert started.returncode == 0, started.stderr
    assert [t.value for t in optuna.load_study(study_name="kept", storage=servers.storage).trials] == [0.5]
    assert MlflowClient(servers.tracking_uri).get_experiment_by_name("kept").experiment_id == experiment
