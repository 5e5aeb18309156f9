"""`pip install .` gives a `switchboard` command equivalent to `python run.py`, with the
console's static files inside the package: built as a real wheel, installed into a directory
of its own, and started from there (the dependencies come from the test environment)."""

import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.support.processes import ROOT, ServerProcess

BUILD_TIMEOUT = 120.0
CONSOLE_FILES = ("index.html", "customer.html", "agent.html", "switchboard.js")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, installed (without dependencies) into its own prefix."""
    work = tmp_path_factory.mktemp("package")
    subprocess.run(
        # The build backend is the locked setuptools of this environment, not a fresh download.
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
        ],
        check=True,
        timeout=BUILD_TIMEOUT,
        cwd=work,
    )
    (wheel,) = (work / "dist").glob("switchboard-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "switchboard = run:main" in archive.read(entry_points).decode()
    assert "run.py" in names
    assert {f"app/static/{name}" for name in CONSOLE_FILES} <= names, sorted(names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=BUILD_TIMEOUT,
        cwd=work,
    )
    return target


def command(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        [str(target / "bin" / "switchboard"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env=env,
    )


def test_the_switchboard_command_takes_run_py_arguments(installed: Path, tmp_path: Path) -> None:
    """Run from elsewhere, so that nothing of the checkout is on the path."""
    shown = command(installed, "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "--workbench" in shown.stdout and "--redis-cluster" in shown.stdout
    token = command(installed, "token", "--agent", "alice", "--secret", "s" * 32, cwd=tmp_path)
    assert token.returncode == 0, token.stderr
    assert token.stdout.count(".") == 2  # a JWT
    refused = command(installed, "--event-loop", "nope", cwd=tmp_path)
    assert refused.returncode == 2
    where = subprocess.run(
        [sys.executable, "-c", "import app, run; print(app.__file__, run.__file__)"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
    )
    assert where.stdout.split() == [str(installed / "app" / "__init__.py"), str(installed / "run.py")], where


def test_the_installed_server_serves_the_api_and_the_console(installed: Path, tmp_path: Path) -> None:
    server = ServerProcess(["--no-redis"], env={"PYTHONPATH": str(installed)}, log_dir=tmp_path)
    server.args = [str(installed / "bin" / "switchboard"), *server.args[2:]]
    server.start()
    try:
        with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
            assert response.status == 200
        for name in CONSOLE_FILES:
            with urllib.request.urlopen(f"{server.url}/console/{name}", timeout=5) as response:
                assert response.status == 200 and response.read()
    finally:
        assert server.stop() == 0
