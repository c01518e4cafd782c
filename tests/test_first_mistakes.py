"""A new user's three mistakes: each gives one message, cause first, whose fix works when pasted.

A fresh account (``tests/first_user.py``) runs docs/podman.md's seed against their own Covalent
server started in a shell holding the mistake: an ``XDG_RUNTIME_DIR`` that does not exist or
belongs to root (as after ``su``), a ``CONTAINER_HOST`` where nothing listens, or an image
their store lacks (no registry). The node's error is read as the README shows it; the fix
between its first backticks is pasted into the same shell, and the seed runs again to 15.
The doctor's failing findings for the same shell are pasted the same way and must clear.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.first_user import REPO_ROOT, FreshUser, fresh_user
from tests.test_first_hour import _blocks, _free_port, _port_setting, _section

pytestmark = [pytest.mark.engine("podman-rootless"), pytest.mark.covalent]

ACTIVATE = "cd ~/oci-executor && . .venv/bin/activate\n"


@pytest.fixture(scope="module")
def newcomer() -> Iterator[FreshUser]:
    """A fresh user with the package installed, the host-Python image built and a free port."""
    with fresh_user("ocim") as user:
        port = _free_port()
        done = user.bash(ACTIVATE + _port_setting(port) + "oci-executor image build\n", timeout=300)
        assert done.returncode == 0, done.stderr
        seed = _blocks(_section((REPO_ROOT / "docs" / "podman.md").read_text(encoding="utf-8"), 6), "python")[
            0
        ]
        for name, image in (("seed.py", None), ("seed-missing.py", "oci-executor/missing:1")):
            path = f"{user.home}/{name}"
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(seed if image is None else re.sub(r'image="[^"]+"', f'image="{image}"', seed))
            user.chown(path)
        yield user


@pytest.fixture(scope="module")
def roots_runtime_dir() -> Iterator[str]:
    """root's runtime folder as `su` passes it on: /run/user/0 if there is one, else a stand-in."""
    if os.path.isdir("/run/user/0"):
        yield "/run/user/0"
        return
    folder = tempfile.mkdtemp(prefix="oci-root-runtime-")  # root's, mode 0700
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _in_shell(mistake: str, *steps: str) -> str:
    """A script: the user's shell holding ``mistake``, then ``steps``; the server stops at the end."""
    return ACTIVATE + f"{mistake}\n" + "\n".join(steps) + "\ncovalent stop >/dev/null 2>&1 || true\n"


def _message(output: str) -> str:
    """The node's error as the seed's failure branch prints it (``FAILED: ClassName: message``)."""
    match = re.search(r"^FAILED: (.*)$", output, flags=re.M)
    assert match, output
    return match.group(1)


def _first_command(text: str) -> str:
    match = re.search(r"`([^`]+)`", text)
    assert match, f"no command to paste in: {text}"
    return match.group(1)


def _doctor_fails(user: FreshUser, mistake: str) -> list[dict[str, str]]:
    done = user.bash(_in_shell(mistake, "oci-executor doctor --backend podman --json || true"), timeout=300)
    start = done.stdout.find("[")
    findings = json.loads(done.stdout[start:]) if start >= 0 else []
    assert findings, done.stdout + done.stderr
    return [f for f in findings if f["status"] == "fail"]


MISTAKES = {
    "missing-runtime-dir": (
        "export XDG_RUNTIME_DIR=/run/user/$(id -u)",
        r"XDG_RUNTIME_DIR=/run/user/\d+ does not exist",
    ),
    "foreign-runtime-dir": (
        "export XDG_RUNTIME_DIR={roots}",
        r"XDG_RUNTIME_DIR=\S+ belongs to root \(uid 0\), not to you",
    ),
    "dead-container-host": (
        "export CONTAINER_HOST=unix:///tmp/nothing-listens-here.sock",
        r"CONTAINER_HOST=unix:///tmp/nothing-listens-here\.sock: no Podman answers there",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_gives_its_cause_first_and_a_fix_that_works(
    newcomer: FreshUser, roots_runtime_dir: str, mistake: str
) -> None:
    setting, cause = MISTAKES[mistake]
    setting = setting.format(roots=roots_runtime_dir)
    done = newcomer.bash(_in_shell(setting, "covalent start --no-cluster >/dev/null", "python ~/seed.py"))
    message = _message(done.stdout + done.stderr)
    _, _, text = message.partition(": ")
    first_sentence = re.split(r"(?<=[^.])\. ", text, maxsplit=1)[0]
    assert re.match(cause, first_sentence), f"the cause is not the first sentence: {message}"
    assert "Also:" not in message and "systemctl" not in message, message
    fix = _first_command(text.split("Fix: ", 1)[1])
    done = newcomer.bash(_in_shell(setting, fix + " >/dev/null", "python ~/seed.py"))
    assert done.stdout.strip().splitlines()[-1:] == ["15"], (
        f"pasting `{fix}` did not help:\n{done.stdout}{done.stderr}"
    )

    # The doctor, in the same shell: every failing podman finding's fix, pasted, clears it.
    fails = _doctor_fails(newcomer, setting)
    assert fails, "the doctor found nothing wrong"
    for finding in fails:
        assert "sudo" not in finding["fix"].split(";")[0], finding
    pasted = "\n".join(_first_command(f"`{f['fix']}`" if "`" not in f["fix"] else f["fix"]) for f in fails)
    assert _doctor_fails(newcomer, f"{setting}\n{pasted}") == [], pasted


def test_a_missing_image_names_the_store_and_a_fix_that_works_offline(newcomer: FreshUser) -> None:
    done = newcomer.bash(
        _in_shell("true", "covalent start --no-cluster >/dev/null", "python ~/seed-missing.py")
    )
    output = done.stdout + done.stderr
    message = _message(output)
    assert message.startswith(
        "ImagePullError: Image 'oci-executor/missing:1' is not in the rootless Podman image store of this user"
    ), message
    fix = _first_command(message.split("Fix: ", 1)[1])
    done = newcomer.bash(
        _in_shell("true", fix, "covalent start --no-cluster >/dev/null", "python ~/seed-missing.py")
    )
    assert done.stdout.strip().splitlines()[-1:] == ["15"], (
        f"pasting `{fix}` did not help:\n{done.stdout}{done.stderr}"
    )


def test_docker_is_one_quiet_line_for_a_podman_user(newcomer: FreshUser) -> None:
    """Docker is installed but not theirs: `ls`, `gc` and the doctor say so in one line each,
    never as a failure and never with a root-equivalent group as the fix."""
    if not os.path.exists("/var/run/docker.sock"):
        pytest.skip("no Docker socket on this host")
    done = newcomer.bash(
        ACTIVATE + "oci-executor ls; oci-executor gc --dry-run; oci-executor doctor; echo doctor=$?"
    )
    lines = (done.stdout + done.stderr).splitlines()
    docker = [line for line in lines if re.match(r"(ok|warn|fail|skip|skipped) docker ", line)]
    assert len(docker) == 3, "\n".join(docker)
    assert all("usermod" not in line and not line.startswith("fail") for line in docker), "\n".join(docker)
    assert sum("not visited (permission denied" in line for line in docker) == 2, "\n".join(docker)
    assert any(line.startswith("skip docker engine: not used (") for line in docker), "\n".join(docker)
    assert "doctor=0" in lines, done.stdout
