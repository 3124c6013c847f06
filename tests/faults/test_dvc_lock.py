"""Two `dvc repro` at once: DVC's lock refuses the second, and the first finishes with whole outputs.

While a stage command runs, DVC 3 holds a read-write lock on its outputs (.dvc/tmp/rwlock) rather than the
repository lock, so a second repro is refused naming the busy output and the process that holds it. The stage
is a stand-in that runs until the test releases it: this tests DVC's lock, not our stages.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.dvc_project import dvc, dvc_command, dvc_env

pytestmark = pytest.mark.slow

# Logs its start, waits for the test's go-ahead, then writes three files.
SLOW_STAGE = """\
import sys, time
from pathlib import Path

started, release, out = map(Path, sys.argv[1:])
with started.open("a") as log:
    log.write("started\\n")
deadline = time.monotonic() + 120
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
out.mkdir()
for part in range(3):
    (out / f"part{part}.txt").write_text(f"part {part}\\n")
"""


def test_second_repro_is_refused_by_the_lock_and_the_first_completes(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    started, release = tmp_path / "started.log", tmp_path / "release"
    (project / "slow_stage.py").write_text(SLOW_STAGE)
    stage = {
        "cmd": f"{sys.executable} slow_stage.py {started} {release} out",
        "deps": ["slow_stage.py"],
        "outs": ["out"],
    }
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"slow": stage}}))
    assert dvc(project, "init", "--no-scm", "-q").returncode == 0

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            dvc_command("repro"), cwd=project, env=dvc_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while not started.is_file():
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "the first repro never started its stage"
            time.sleep(0.05)
        second = dvc(project, "repro")
    finally:
        release.touch()
        first.wait(timeout=120)

    assert second.returncode != 0
    assert f"'{project / 'out'}' is busy, it is being blocked by:\n  (PID {first.pid}):" in second.stderr, second.stderr
    assert started.read_text() == "started\n", "the refused repro must not run the stage"
    assert first.returncode == 0, (tmp_path / "first.log").read_text()
    assert {p.name: p.read_text() for p in (project / "out").iterdir()} == {
        f"part{i}.txt": f"part {i}\n" for i in range(3)
    }
    status = dvc(project, "status")
    assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout, (
        status.stdout + status.stderr
    )
