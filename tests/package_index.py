"""A package index on the loopback for the environment tests: built here, served here.

Small local projects are turned into wheels with ``pip wheel`` (an in-tree PEP 517 backend,
so nothing is fetched), one project only as a source distribution, and the files are served as
a PEP 503 "simple" index by ``http.server`` on 127.0.0.1. :func:`pip_environment` is the pip
configuration (``PIP_*`` variables) that points the host's pip at it and nowhere else.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BACKEND = textwrap.dedent(
    '''
    """A minimal PEP 517 backend: a pure-Python wheel of the package folder, or an sdist."""
    import base64, hashlib, io, os, tarfile, zipfile

    NAME, VERSION, REQUIRES = open("META").read().split("|")

    def _metadata():
        lines = ["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {VERSION}"]
        lines += [f"Requires-Dist: {r}" for r in REQUIRES.split(",") if r.strip()]
        return "\\n".join(lines) + "\\n"

    def get_requires_for_build_wheel(config_settings=None):
        return []

    def get_requires_for_build_sdist(config_settings=None):
        return []

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        module = NAME.replace("-", "_")
        dist = f"{module}-{VERSION}.dist-info"
        files = {}
        for base, _, names in os.walk(module):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(base, name)
                    files[path] = open(path, "rb").read()
        files[f"{dist}/METADATA"] = _metadata().encode()
        files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
        record = []
        for path, data in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{dist}/RECORD,,")
        files[f"{dist}/RECORD"] = ("\\n".join(record) + "\\n").encode()
        filename = f"{module}-{VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
            for path, data in files.items():
                archive.writestr(path, data)
        return filename

    def build_sdist(sdist_directory, config_settings=None):
        base = f"{NAME.replace('-', '_')}-{VERSION}"
        with open("PKG-INFO", "w") as handle:
            handle.write(_metadata())
        with tarfile.open(os.path.join(sdist_directory, base + ".tar.gz"), "w:gz") as archive:
            for name in sorted(os.listdir(".")):
                if not name.startswith("."):
                    archive.add(name, arcname=f"{base}/{name}")
        return base + ".tar.gz"
    '''
)


def make_project(root: Path, name: str, version: str, requires: str = "", body: str = "") -> Path:
    """A project folder: a package ``name`` whose ``VALUE`` is ``"name version"``."""
    folder = root / f"{name}-{version}"
    module = folder / name.replace("-", "_")
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(f"VALUE = {f'{name} {version}'!r}\n{body}")
    (folder / "META").write_text(f"{name}|{version}|{requires}")
    (folder / "tinybackend.py").write_text(BACKEND)
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "tinybackend"\nbackend-path = ["."]\n'
    )
    return folder


def build_wheel(project: Path, dest: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-index",
            "-q",
            "-w",
            str(dest),
            str(project),
        ],
        check=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
    )


def build_sdist(project: Path, dest: Path) -> None:
    """An sdist through the project's own backend (``pip`` has no sdist command)."""
    code = f"import tinybackend; print(tinybackend.build_sdist({str(dest)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=project, stdout=subprocess.DEVNULL)


def write_simple_index(files: Path) -> None:
    """PEP 503 pages under ``files/simple/`` for every wheel and sdist in ``files``."""
    by_project: dict[str, list[str]] = {}
    for name in sorted(os.listdir(files)):
        if name.endswith((".whl", ".tar.gz")):
            project = name.split("-")[0].replace("_", "-").lower()
            by_project.setdefault(project, []).append(name)
    for project, names in by_project.items():
        page = files / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="../../{n}">{n}</a>\n' for n in names)
        (page / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")


@contextmanager
def serving(files: Path) -> Iterator[str]:
    """Serve ``files`` on the loopback; yields the simple index's URL."""
    handler = functools.partial(_QuietHandler, directory=str(files))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


def pip_environment(index_url: str, cache: Path) -> dict[str, str]:
    """The host pip configuration that asks only the test index."""
    return {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": index_url,
        "PIP_FIND_LINKS": "",
        "PIP_CACHE_DIR": str(cache),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def build_index(root: Path) -> Path:
    """The test index's files: alpha 1.0 (needs beta), beta 1.0 and 2.0, gamma (sdist only)."""
    projects = root / "projects"
    files = root / "files"
    files.mkdir(parents=True)
    build_wheel(make_project(projects, "ocitest-alpha", "1.0", "ocitest-beta>=1.0"), files)
    build_wheel(make_project(projects, "ocitest-beta", "1.0"), files)
    build_wheel(make_project(projects, "ocitest-beta", "2.0"), files)
    build_sdist(make_project(projects, "ocitest-gamma", "1.0"), files)
    write_simple_index(files)
    return files
