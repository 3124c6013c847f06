"""The README, run as a newcomer runs it.

Every fenced block whose info string is `bash tested` holds commands a newcomer is told to type after
`make study`. This test builds a fresh clone of what git holds (tracked files plus new, not ignored ones: what
a commit would hold), reproduces a tiny study in it with `dvc repro` (what `make study` runs, with the project's
interpreter), and runs every marked command, in README order, as written. Each must exit 0 with no traceback
or error line; a comment `writes PATH` must leave PATH there; the views a newcomer reads must show what the
README says they show. A command the README gains is covered by construction.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from tests.conftest import REPO
from tests.dvc_project import dvc_env, update_params

pytestmark = pytest.mark.slow

MARK = "tested"  # the README's marker: ```bash tested
# The tiny study: the default pipeline with every stage and the default imagenet_probe variant, in ~2 minutes.
TINY_STUDY = {
    "data": {"image_size": 32, "attributes": ["happy", "dominant", "attractive"], "workers": 1,
             "synthetic": {"n_faces": 60}},
    "model": {"backbone": "resnet18", "head_hidden": 8, "trainable_blocks": 1},
    "train": {"max_epochs": 2, "batch_size": 16, "patience": 5, "progress_bar": False, "accelerator": "cpu"},
    "explain": {"methods": ["gradcam"], "attributes": ["happy"], "gallery_faces": 1, "mean_faces": 4,
                "score_faces": 2, "curve_steps": 3},
    "baselines": {"reliability_repeats": 3, "handcrafted": {"c_grid": [1.0]}},
    "manifold": {"methods": ["pca"], "dims": [2], "permutations": 19, "folds": 3, "knn_neighbors": 3},
}  # fmt: skip
FAILURE = re.compile(r"Traceback \(most recent call last\)|^\s*ERROR|^\s*error:|failed to load", re.M | re.I)
WRITES = re.compile(r"#.*\bwrites (\S+?)[:,;]?(?:\s|$)")


def readme_commands(markdown: str) -> list[str]:
    """The commands of every `bash tested` block, in order; a trailing backslash joins lines."""
    fences = [t for t in MarkdownIt("commonmark").parse(markdown) if t.type == "fence"]
    blocks = [t.content for t in fences if t.info.split()[:2] == ["bash", MARK]]
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


COMMANDS = readme_commands((REPO / "README.md").read_text())


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def fresh_clone(dest: Path) -> Path:
    """What a clone of this checkout's next commit holds: tracked and new unignored files, one commit."""
    listed = _git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not source.is_symlink():  # a tracked file deleted in the work tree is gone
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    _git(dest, "init", "-q")
    _git(dest, "config", "user.email", "newcomer@facetraits.invalid")
    _git(dest, "config", "user.name", "a newcomer")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-qm", "fresh clone")
    return dest


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, mobilenet_imagenet: Path) -> Path:
    """A fresh clone with a tiny study reproduced and committed, as after `make study` and a commit."""
    root = fresh_clone(tmp_path_factory.mktemp("newcomer"))
    update_params(root, TINY_STUDY)
    result = _run(root, "dvc repro", timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "tiny study")
    return root


def _run(root: Path, command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, shell=True, cwd=root, env=dvc_env(), capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _headline(root: Path) -> dict:
    return yaml.safe_load((root / "results" / "report.json").read_text())


def _shows_every_method(root: Path, output: str) -> None:
    for method in _headline(root)["test_r_mean"]:
        assert method in output, f"{method!r} missing from:\n{output}"


def _shows_every_attribute(root: Path, output: str) -> None:
    for attribute in TINY_STUDY["data"]["attributes"]:
        assert attribute in output, f"{attribute!r} missing from:\n{output}"


def _shows_short_metric_keys_of_this_study_only(root: Path, output: str) -> None:
    assert "test_r_mean.main" in output, output
    assert "studies/" not in output, f"another study's metrics are shown:\n{output}"


def _shows_experiment_with_its_change_and_numbers(root: Path, output: str) -> None:
    assert "lr-3e-4" in output and "train.lr" in output, output
    assert "test_r_mean.main" in output, f"no headline column in the experiments table:\n{output}"


def _plots_page_has_every_chart(root: Path, output: str) -> None:
    page = (root / "dvc_plots" / "index.html").read_text()
    plot_ids = [next(iter(p)) for p in yaml.safe_load((root / "dvc.yaml").read_text())["plots"] if isinstance(p, dict)]
    for plot_id in plot_ids:
        assert plot_id in page, f"plot {plot_id!r} missing from dvc_plots/index.html"


def _compares_the_two_studies(root: Path, output: str) -> None:
    assert "studies/omi" in output and "test_r_mean" in output, output


def _changed_param_is_listed(root: Path, output: str) -> None:
    assert "train.lr" in output, output


# What each view must show, beyond exit 0, no error line and the files its comment says it writes.
SHOWS: dict[str, Callable[[Path, str], None]] = {
    "facetraits results --per-attribute": _shows_every_attribute,
    "facetraits results . studies/omi": _compares_the_two_studies,
    "facetraits results": _shows_every_method,
    "dvc metrics show": _shows_short_metric_keys_of_this_study_only,
    "dvc exp show": _shows_experiment_with_its_change_and_numbers,
    "dvc exp diff": _changed_param_is_listed,
    "facetraits plots": _plots_page_has_every_chart,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_and_check(root: Path, command: str) -> None:
    """A server command (`mlflow ui …`) runs on a free loopback port; the experiment the README's address opens
    is the study's, and its study run carries the headline."""
    port = _free_port()
    argv = [*shlex.split(command.split("#", 1)[0]), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(argv, cwd=root, env=dvc_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    name = yaml.safe_load((root / "params.yaml").read_text()).get("tracking", {}).get("experiment", "facetraits")
    try:
        experiment = _wait_for_json(server, f"{api}/experiments/get-by-name?experiment_name={name}")["experiment"]
        (readme_id,) = set(re.findall(r"#/experiments/(\d+)/", (REPO / "README.md").read_text()))
        assert experiment["experiment_id"] == readme_id, "the README's MLflow address opens another experiment"
        search = {"experiment_ids": [readme_id], "filter": "tags.`facetraits.role` = 'study'"}
        request = urllib.request.Request(f"{api}/runs/search", json.dumps(search).encode(),
                                         {"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            study = max(json.loads(response.read())["runs"], key=lambda run: run["info"]["start_time"])
        headline = {m["key"] for m in study["data"].get("metrics", [])}
        assert {f"test_r_mean/{m}" for m in _headline(root)["test_r_mean"]} <= headline, headline
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _wait_for_json(server: subprocess.Popen, url: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, f"the server exited {server.returncode}:\n{server.stdout.read()}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            assert time.monotonic() < deadline, f"no answer from {url} in {seconds} s"
            time.sleep(1)


def test_readme_marks_the_commands_a_newcomer_types() -> None:
    """The marker is in use (a README with no tested block would make this module test nothing)."""
    assert any(c.startswith("facetraits results") for c in COMMANDS) and any(c.startswith("dvc exp run") for c in COMMANDS)
    assert "make study" in (REPO / "README.md").read_text() and "make test" in (REPO / "README.md").read_text()


def test_make_study_is_dvc_repro_after_the_install() -> None:
    """The test stands in for `make study` with `dvc repro` in the project's interpreter: check that is what it runs."""
    outside_make = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # make test
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "study"], cwd=REPO, env=outside_make, capture_output=True, text=True,
        check=True,
    ).stdout
    assert dry.strip().splitlines()[-1].endswith("dvc repro"), dry


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_works_in_a_fresh_clone(clone: Path, command: str) -> None:
    if command.split()[:2] in (["mlflow", "ui"], ["mlflow", "server"]):
        _serve_and_check(clone, command)
        return
    started = time.time()
    result = _run(clone, command)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{output}"
    assert not FAILURE.search(output), f"`{command}` printed an error:\n{output}"
    for written in WRITES.findall(command):
        path = clone / written
        assert path.exists() and path.stat().st_mtime >= started - 1, f"`{command}` did not write {written}"
    shows = next((check for prefix, check in SHOWS.items() if command.startswith(prefix)), None)
    if shows is not None:
        shows(clone, result.stdout)


def test_the_study_leaves_git_clean_but_for_what_the_user_changed(clone: Path) -> None:
    """After the README's commands, the study's tracked files are unchanged except by the experiment applied
    or run in the workspace: no stage rewrites a tracked file it does not own (dvc_plots/ and mlflow.db are
    ignored)."""
    changed = {line[3:] for line in _git(clone, "status", "--porcelain").splitlines()}
    assert changed <= {"params.yaml", "dvc.lock", "results/report.json"}, changed
