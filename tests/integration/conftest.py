"""Real PostgreSQL and `mlflow server` for the session (scripts/servers.sh), and the pipeline run against them."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import yaml

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "servers.sh"
UNAVAILABLE = 3  # the script's exit status when PostgreSQL cannot be installed or run on this machine
REQUIRE = "FACETRAITS_REQUIRE_SERVERS"  # set (CI) to fail rather than skip when PostgreSQL is unavailable
EXPERIMENT = "scale-out"
STAGE_TRIALS = 4  # run by the sweep stage's two worker processes
JOINED_TRIALS = 1  # run by `facetraits sweep-worker`, as from another node


@dataclass(frozen=True)
class Servers:
    state: Path
    env: dict[str, str]  # the environment the script ran with (state folder, ports)
    storage: str  # the Optuna storage URL (PostgreSQL)
    tracking_uri: str  # the MLflow server
    pg_port: int
    mlflow_port: int

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        return servers_script(command, self.env)

    def libpq_uri(self, database: str) -> str:
        """For psycopg2.connect: the storage URL without SQLAlchemy's driver name, on another database."""
        server = self.storage.split("://", 1)[1].rsplit("/", 1)[0]
        return f"postgresql://{server}/{database}"

    def query(self, database: str, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows straight from PostgreSQL, past Optuna and MLflow."""
        with closing(psycopg2.connect(self.libpq_uri(database))) as connection, connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall()


def servers_script(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300, check=False)


def exported(text: str) -> dict[str, str]:
    """The variables of `export NAME=value` lines, as the shell would set them."""
    pairs = [shlex.split(line)[1].split("=", 1) for line in text.splitlines() if line.startswith("export ")]
    return dict(pairs)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    # not under pytest's tmp_path: as root the script runs PostgreSQL as an unprivileged user, who cannot enter it
    state = Path(tempfile.mkdtemp(prefix="facetraits-servers-"))
    pg_port, mlflow_port = _free_port(), _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FACETRAITS_")}
    env.update(
        FACETRAITS_SERVERS_DIR=str(state), FACETRAITS_PG_PORT=str(pg_port), FACETRAITS_MLFLOW_PORT=str(mlflow_port),
        FACETRAITS_MLFLOW_WORKERS="1", FACETRAITS_PG_DISPOSABLE="1",
    )  # fmt: skip
    try:
        started = servers_script("start", env)
        if started.returncode == UNAVAILABLE and not os.environ.get(REQUIRE):
            pytest.skip(f"scripts/servers.sh start: {started.stderr.strip().splitlines()[-1]}")
        assert started.returncode == 0, f"scripts/servers.sh start failed:\n{started.stderr}"
        exports = exported(started.stdout)
        previous = os.environ.get("PGPASSFILE")
        os.environ["PGPASSFILE"] = exports["PGPASSFILE"]  # libpq reads the password there, here and in child processes
        try:
            storage, tracking_uri = exports["FACETRAITS_SWEEP_STORAGE"], exports["FACETRAITS_TRACKING_URI"]
            yield Servers(state, env, storage, tracking_uri, pg_port, mlflow_port)
        finally:
            if previous is None:
                os.environ.pop("PGPASSFILE")
            else:
                os.environ["PGPASSFILE"] = previous
    finally:
        destroyed = servers_script("destroy", env)
        assert destroyed.returncode == 0 and not state.exists(), (
            f"scripts/servers.sh destroy failed:\n{destroyed.stderr}"
        )


def run(args: list[str], cwd: Path) -> str:
    """A command of the project's environment (dvc, python, facetraits), which must succeed; its stdout."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dvc(project: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], project)


@dataclass(frozen=True)
class ScaleOut:
    project: Path  # a git + DVC project whose `dvc repro train` has run against the servers
    study: str  # the Optuna study's name


@pytest.fixture(scope="session")
def scale_out(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> ScaleOut:
    """Tiny data, swept on PostgreSQL by the stage's two workers plus a joining worker, every run on the server."""
    project = tmp_path_factory.mktemp("scale-out") / "project"
    project.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    for folder in ("pipelines", "src", "data/raw"):
        shutil.copytree(REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())  # complete: dvc.yaml interpolates from it
    params["data"].update(image_size=32, attributes=["happy", "dominant", "attractive"], synthetic={"n_faces": 48})
    params["model"].update(head_hidden=8, trainable_blocks=0)
    params["train"].update(batch_size=16, max_epochs=1, progress_bar=False)
    params["sweep"].update(
        n_trials=STAGE_TRIALS, workers=2, storage=servers.storage, max_epochs=2,
        space={"lr": {"low": 1e-4, "high": 5e-2, "log": True}, "head": {"choices": ["linear", "mlp"]}},
    )  # fmt: skip
    params["tracking"].update(uri=servers.tracking_uri, experiment=EXPERIMENT)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / ".gitignore").write_text("__pycache__/\n")
    run(["git", "init", "-q"], project)
    dvc(project, "init", "-q")
    dvc(project, "repro", "train")
    study = yaml.safe_load((project / "results" / "sweep" / "best_params.yaml").read_text())["study"]
    run(["facetraits", "sweep-worker", "--study", study, "--storage", servers.storage, "--n-trials", str(JOINED_TRIALS)],
        project)  # fmt: skip
    return ScaleOut(project, study)
