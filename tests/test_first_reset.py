"""`podman system reset` under a running process: its transient Podman service follows the store.

A fresh user (it is destructive: never the shared test user) runs a task in a long-lived
process, as a Covalent server does, on the vfs store a new Debian user gets; then, in another
shell, follows docs/podman.md section 2 (overlay, reset) and loads an image again; the same
process's next task must see the new store at once, not after the old service idles out.
"""

from __future__ import annotations

import pytest

from tests.first_user import fresh_user

pytestmark = pytest.mark.engine("podman-rootless")

DRIVER = """
import json, subprocess, sys, time
from oci_executor import OCIExecutor
from oci_executor.pool import POOL

image = sys.argv[1]


def task():
    return "ran"


def run():
    out = OCIExecutor(backend="podman", image=image, reuse="never").run_sync(task, [], {}, {})
    return out.load_value() if out.ok else out.summary()


first = run()
POOL.drain()
shell = (
    "mkdir -p ~/.config/containers && printf '[storage]\\\\ndriver = \\"overlay\\"\\\\n' > ~/.config/containers/storage.conf"
    " && echo y | podman system reset && oci-executor image build " + image
)
done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True)
started = time.monotonic()
try:
    second = run()
except Exception as exc:
    second = f"{type(exc).__name__}: {exc}"
elapsed = time.monotonic() - started
driver_now = subprocess.run(["podman", "info", "--format", "{{.Store.GraphDriverName}}"], capture_output=True, text=True).stdout.strip()
print("@@" + json.dumps({"first": first, "second": second, "elapsed": elapsed, "shell": done.returncode,
                          "shell_err": done.stderr[-2000:], "driver": driver_now}))
"""


def test_a_reset_under_a_running_process_is_followed_at_once() -> None:
    import json

    with fresh_user("ocir") as user:
        image = "oci-executor/python:reset"
        built = user.bash(f"cd oci-executor && . .venv/bin/activate && oci-executor image build {image}")
        assert built.returncode == 0, built.stderr
        path = f"{user.home}/driver.py"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(DRIVER)
        user.chown(path)
        done = user.bash(f". oci-executor/.venv/bin/activate && python {path} {image}", timeout=600)
        line = next((x for x in done.stdout.splitlines() if x.startswith("@@")), None)
        assert line, done.stdout + done.stderr
        facts = json.loads(line[2:])
        assert facts["shell"] == 0, facts["shell_err"]
        assert facts["first"] == "ran", facts
        assert facts["driver"] == "overlay", facts
        assert facts["second"] == "ran", f"the task after the reset failed: {facts['second']}"
        assert facts["elapsed"] < 30, f"the second task waited {facts['elapsed']:.0f} s for a stale service"
