"""A new rootless user's first hour: README.md and docs/podman.md followed as written.

Each test creates a fresh account (``tests/first_user.py``): no sudo after the package install,
no registry (nothing is pulled: images come from ``oci-executor image build``), no systemd and
no login session. The page's own code blocks are run, so a page that stops working fails here.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.first_user import REPO_ROOT, FreshUser, fresh_user

pytestmark = [pytest.mark.engine("podman-rootless"), pytest.mark.covalent]

PODMAN_MD = REPO_ROOT / "docs" / "podman.md"
README = REPO_ROOT / "README.md"
FIGURES = Path("/tmp/oci-executor-first-hour.json")
"""Where the journey writes its timings (for the benchmark notes; not asserted)."""


def _section(text: str, number: int) -> str:
    return re.split(r"^## ", text, flags=re.M)[1:][number - 1]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.M | re.S)


def _as_user(block: str) -> str:
    """A block's lines minus those an administrator runs (sudo, other distributions)."""
    return "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("sudo "))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_setting(port: int) -> str:
    """The one deviation from the pages: the user's server gets a free port (the machine is shared)."""
    settings = {"dispatcher.port": port, "user_interface.port": port}
    return f"python -c 'import covalent as ct; ct.set_config({json.dumps(settings)})'\n"


def test_the_readme_use_it_commands_are_podman_md_s() -> None:
    """One venv, one order: every command of the README's "Use it" is a command of podman.md."""
    readme_use = _blocks(README.read_text(encoding="utf-8").split("## Use it", 1)[1], "bash")[0]
    podman_lines = {
        line.split("#", 1)[0].strip()
        for block in _blocks(PODMAN_MD.read_text(encoding="utf-8"), "bash")
        for line in block.splitlines()
    }
    for line in readme_use.splitlines():
        for command in line.split("#", 1)[0].split(";"):
            command = command.strip()
            if command and command != "covalent stop":
                assert command in podman_lines, f"README's {command!r} is not what docs/podman.md says"


def test_a_new_user_follows_the_pages_to_15() -> None:
    """Sections 2-6 of podman.md as written, then the README's first example as written."""
    text = PODMAN_MD.read_text(encoding="utf-8")
    with fresh_user("ocij", install=False) as user:
        cloned = time.monotonic()
        port = _free_port()
        script = ["set -euo pipefail", 'echo "@@ $(date +%s.%N) start"']
        for number in (2, 3, 4, 5):
            for block in _blocks(_section(text, number), "bash"):
                script.append(
                    _as_user(block).replace(
                        "covalent start --no-cluster", f"covalent start --no-cluster -p {port}"
                    )
                )
            if number == 3:
                script.append(_port_setting(port))
            script.append(f'echo "@@ $(date +%s.%N) section {number}"')
        (seed,) = _blocks(_section(text, 6), "python")
        (readme_example,) = _blocks(README.read_text(encoding="utf-8").split("## Use it", 1)[0], "python")
        for name, code in (("seed.py", seed), ("readme.py", readme_example)):
            path = f"{user.workdir}/{name}"
            Path(path).write_text(code, encoding="utf-8")
            user.chown(path)
        script.append(f"python {user.workdir}/seed.py")
        script.append('echo "@@ $(date +%s.%N) seed"')
        script.append(f'python {user.workdir}/readme.py || echo "readme exited $?"')
        script.append("covalent stop")
        started = time.monotonic()
        done = user.bash("\n".join(script) + "\n", stdin="y\n", timeout=900)
        output = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        assert done.returncode == 0, output
        marks = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("@@ ")]
        stamps = {label[-1]: float(at) for at, *label in marks}
        lines = [line for line in done.stdout.splitlines() if not line.startswith("@@ ")]
        # The seed's own print, right after the pages' last step.
        seed_out = done.stdout.split("section 5\n", 1)[1].split("\n@@ ", 1)[0].strip().splitlines()
        assert seed_out and seed_out[-1] == "15", output
        # The README's example: 5, or (no registry for its python:3.11-slim) the node's error, cause first.
        if "readme exited 1" in lines:
            failure = done.stderr.split("FAILED: ", 1)
            assert len(failure) == 2, output
            first_sentence = failure[1].split(". ", 1)[0]
            assert first_sentence.startswith("ImagePullError: Image 'python:3.11-slim'"), first_sentence
        else:
            assert lines[-1] == "5", output
        figures = {
            "clone_to_15_s": round(stamps["seed"] - stamps["start"] + started - cloned, 1),
            "install_s": round(stamps["3"] - stamps["2"], 1),
            "after_install_to_15_s": round(stamps["seed"] - stamps["3"], 1),
            "storage_s": round(stamps["2"] - stamps["start"], 1),
            "image_build_s": round(stamps["4"] - stamps["3"], 1),
            "server_start_s": round(stamps["5"] - stamps["4"], 1),
            "seed_s": round(stamps["seed"] - stamps["5"], 1),
        }
        FIGURES.write_text(json.dumps(figures) + "\n", encoding="utf-8")
        print(f"first hour figures: {figures}")
        _no_service_left(user)


def _no_service_left(user: FreshUser) -> None:
    out = subprocess.run(["ps", "-ww", "-u", str(user.uid), "-o", "args="], capture_output=True, text=True)
    deadline = time.monotonic() + 10
    while "system service" in out.stdout and time.monotonic() < deadline:
        time.sleep(0.5)
        out = subprocess.run(
            ["ps", "-ww", "-u", str(user.uid), "-o", "args="], capture_output=True, text=True
        )
    assert "system service" not in out.stdout, out.stdout


def test_a_user_without_root_runs_the_tests_their_own_podman_serves() -> None:
    """The README's test command, as a user: their rootless Podman and the local backend run;
    the summary counts the skips as pytest does and names why, not "no usable engine"."""
    with fresh_user("ocis", install=False) as user:
        selection = "tests/test_contract.py -k 'local or podman-rootless' -q -rA -p no:cacheprovider"
        done = user.bash(f"cd oci-executor && TOX_ENVS=py bash scripts/test.sh -- {selection}", timeout=1500)
        output = f"--- stdout ---\n{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
        assert done.returncode == 0, output
        counts = re.search(r"^(\d+) passed(?:, (\d+) skipped)?.* in [\d.]+s", done.stdout, flags=re.M)
        assert counts, output
        last = done.stdout.strip().splitlines()[-1]
        assert "no usable engine" not in last, last
        skipped = int(counts.group(2) or 0)
        assert last.startswith(f"{skipped} tests skipped"), last
        assert "Ran the rootless Podman tests on your own Podman" in last, last
        assert re.search(r"^PASSED \S+\[podman-rootless\]", done.stdout, flags=re.M), output
        assert not re.search(r"^SKIPPED .*podman-rootless engine", done.stdout, flags=re.M), output


def test_the_demo_runs_for_a_new_user_with_no_image_and_no_registry() -> None:
    """`oci-executor demo` on an empty rootless store with no registry: it builds its image."""
    with fresh_user("ocid") as user:
        port = _free_port()
        script = f"cd oci-executor && . .venv/bin/activate && {_port_setting(port)}oci-executor demo\n"
        done = user.bash(script, timeout=600)
        output = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        assert done.returncode == 0, output
        assert "result: 15" in done.stdout, output
        assert "podman: building oci-executor/python:" in done.stderr, output
        assert "Backend: podman" in done.stderr, output
        listed = user.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout
        assert "oci-executor/python:" in listed, listed
        _no_service_left(user)
