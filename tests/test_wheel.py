"""The wheel: built from the sources, installed into a fresh virtual environment without the checkout, it
serves the dashboard with ``fnodiag serve`` (issue 24).

The fresh environment is made from the base interpreter with the wheel alone installed (``--no-deps``).
Its dependencies (torch, Panel, ...) come from this test's environment through a ``.pth`` line naming
that environment's site-packages folder: a folder added that way has its own ``.pth`` files ignored, so
the editable install of fnodiag there (a finder registered by a ``.pth`` file) cannot leak in, which
``--system-site-packages`` would not prevent (it adds the base interpreter's packages, not this
environment's). The test checks that ``fnodiag`` is imported from the new environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import panel.models.tabulator  # noqa: F401  (the client must know Panel's models to read the document)
import pytest
from bokeh.client import pull_session
from conftest import REPO
from reference_arm import build_reference_arm

from fnodiag.interop.reference_import import import_reference

pytestmark = pytest.mark.slow
SOURCES = ("pyproject.toml", "README.md", "fnodiag", "app")  # what the build sees (app/ must stay out)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` of a copy of the sources (the checkout stays clean)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", ".", "-w", out],
        cwd=src,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (whl,) = out.glob("fnodiag-*.whl")
    return whl


def test_the_wheel_ships_the_package_and_its_data_but_no_top_level_app(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.split("/")[0] == "app" or n.startswith("app.")]
    assert {n.split("/")[0] for n in names if not n.startswith("fnodiag-")} == {"fnodiag"}
    assert {"fnodiag/dashboard/app/main.py", "fnodiag/dashboard/app/app_hooks.py"} <= set(names)
    shipped = {Path(n).name for n in names if n.startswith("fnodiag/sweeps/definitions/") and n.endswith(".toml")}
    assert shipped == {p.name for p in (REPO / "fnodiag" / "sweeps" / "definitions").glob("*.toml")} and shipped


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment from the base interpreter, holding only the wheel; dependencies from ours."""
    env = tmp_path_factory.mktemp("venv") / "env"
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", env], check=True, timeout=300)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "fnodiag-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


def clean_env() -> dict:
    """This process's environment without anything that points at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FNODIAG_ALLOW_REMOTE", "VIRTUAL_ENV")}


def test_fnodiag_serve_from_the_installed_wheel_serves_the_dashboard(venv, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    probe = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import fnodiag, importlib.util; print(fnodiag.__file__, importlib.util.find_spec('app'))",
        ],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert Path(probe[0]).is_relative_to(venv) and not Path(probe[0]).is_relative_to(REPO), probe
    assert probe[1] == "None"  # no top-level `app` package
    runs = tmp_path / "runs"
    import_reference(build_reference_arm(tmp_path / "ref" / "arm_stable_sgd"), runs / "ref-arm", capture=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [venv / "bin" / "fnodiag", "serve", runs, "--port", str(port)],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: everything it starts is stopped with it
    )
    try:
        page, deadline = None, time.monotonic() + 240
        while page is None and time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/app", timeout=120).read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None, "fnodiag serve did not answer"
        assert "<title>fnodiag dashboard</title>" in page
        with pull_session(url=f"http://127.0.0.1:{port}/app") as session:  # a session's document, as a browser gets it
            doc = json.dumps(session.document.to_json(), default=str)
        # the first document a browser gets: the count line and the runs table (sidebar and tabs follow on load)
        assert "ref-arm" in doc and "1 runs" in doc and "tick rows to choose" in doc
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)  # nothing of the group is left
