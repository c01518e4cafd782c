"""An image a node lacks and cannot pull, streamed there from this host through the job.

After its first line, the start step (:data:`.scripts.START`) says where the image stands:
``ok`` (on the node: the container starts), ``waiting`` (another job is loading it onto the
node: one lock per node and image, ``flock`` on the node), or ``wanted`` (not on the node, and
the pull policy forbids a pull or the pull failed, as on an offline cluster). Then this host
runs ``podman save IMAGE`` in the jobs' user's own store (:data:`.scripts.SAVE`) and pipes it
through a second step of the same job into ``podman load`` on the node (:data:`.scripts.LOAD`),
logging progress, and answers ``loaded`` on the start step's stdin, which goes on to start
the container. The image travels on the steps' pipes: no shared folder, no registry.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import IO

from oci_executor.backends.slurm import cli as s
from oci_executor.backends.slurm.steps import read_line
from oci_executor.errors import (
    ContainerError,
    EngineUnavailableError,
    ImageNotFoundError,
    ImagePullError,
    OCIExecutorError,
)
from oci_executor.progress import LOG_EVERY

log = logging.getLogger(__name__)

CHUNK = 1 << 20
"""Bytes read from ``podman save`` and written to the loading step at a time."""


def await_image(
    cli: s.Cli,
    process: subprocess.Popen[bytes],
    job_id: str,
    node: str,
    image: str,
    policy: str,
    step_stderr: Callable[[], str],
) -> None:
    """Read the start step's image lines until ``ok``; stream the image when it is ``wanted``."""
    assert process.stdin is not None
    while True:
        fields = s.decode(read_line(process)).split()
        if fields[:1] != [s.IMAGE_LINE] or len(fields) < 2:
            raise _step_ended(process, node, image, step_stderr())
        if fields[1] == "ok":
            return
        if fields[1] == "waiting":
            log.info("image %s: another job is loading it onto node %s; waiting for it", image, node)
        elif fields[1] == "wanted":
            uid = fields[2] if len(fields) > 2 else "?"
            stream(cli, job_id, node, image, _why_not_on_node(image, uid, node, policy, step_stderr()))
            process.stdin.write(b"loaded\n")
            process.stdin.flush()


def stream(cli: s.Cli, job_id: str, node: str, image: str, why: str) -> None:
    """``podman save`` here (the jobs' user's store) piped into ``podman load`` in job ``job_id``."""
    size = _local_size(cli, image, why)
    log.info("%s: streaming it there from this host's store (%.0f MB in the store)", why, size / 1e6)
    started = time.monotonic()
    with tempfile.TemporaryFile() as save_err, tempfile.TemporaryFile() as load_err:
        save = subprocess.Popen(
            _local(cli, image, "archive"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=save_err,
            env=cli.env(),
            cwd="/",
        )
        try:
            load = subprocess.Popen(
                cli.srun(job_id, s.LOAD, [image]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=load_err,
                env=cli.env(),
                cwd="/",
            )
        except FileNotFoundError:
            save.kill()
            save.wait()
            raise EngineUnavailableError(s.not_installed()) from None
        try:
            sent, broken = _pump(save, load, image, node)
            loaded = load.stdout.read() if load.stdout is not None else b""
        except BaseException:  # interrupted: leave no save or load step running
            for process in (save, load):
                process.kill()
                process.wait()
            raise
        save_code, load_code = save.wait(), load.wait()
        if load_code != 0 and (broken or save_code == 0):
            raise _load_failed(load_code, _text(load_err), image, node, sent)
        if save_code != 0 or load_code != 0:
            raise ImagePullError(
                f"`podman save {image}` failed on this host ({_text(save_err)[-500:]}) while streaming it "
                f"to node {node}. Check the image with `podman image inspect {image}` as the jobs' user here.",
                image=image,
            )
    log.info(
        "streamed image %s to node %s: %.1f MB in %.1f s (%s)",
        image,
        node,
        sent / 1e6,
        time.monotonic() - started,
        s.decode(loaded).strip() or "loaded",
    )


def _pump(
    save: subprocess.Popen[bytes], load: subprocess.Popen[bytes], image: str, node: str
) -> tuple[int, bool]:
    """Copy the archive from ``save`` into ``load``, logging progress: the bytes sent, and
    whether the loading step ended before the archive did."""
    assert save.stdout is not None and load.stdin is not None
    sent, broken = 0, False
    began = last = time.monotonic()
    try:
        while chunk := save.stdout.read(CHUNK):
            load.stdin.write(chunk)
            sent += len(chunk)
            if time.monotonic() - last >= LOG_EVERY:
                last = time.monotonic()
                log.info(
                    "streaming %s to node %s: %.1f MB sent in %.0f s", image, node, sent / 1e6, last - began
                )
        load.stdin.close()
    except BrokenPipeError:  # the loading step ended early: its error says why
        broken = True
        save.kill()
    finally:
        save.stdout.close()
        try:
            load.stdin.close()
        except BrokenPipeError:
            pass
    return sent, broken


def _local(cli: s.Cli, image: str, what: str) -> list[str]:
    """argv of :data:`.scripts.SAVE` on this host, as the jobs' user (root: ``runuser``)."""
    return [*cli.run_as(), "bash", "-c", s.NODE_PRELUDE + s.SAVE, "oci-executor-save", image, what]


def local_size(cli: s.Cli, image: str) -> tuple[int | None, str]:
    """The image's size in the jobs' user's store on this host (None: not there), and why not."""
    try:
        done = subprocess.run(
            _local(cli, image, "size"), capture_output=True, env=cli.env(), cwd="/", timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    out = s.decode(done.stdout).strip()
    if done.returncode == 0 and out.isdigit():
        return int(out), ""
    return None, " ".join(s.decode(done.stderr).split())[-300:]


def _local_size(cli: s.Cli, image: str, why: str) -> int:
    """The image's size in the jobs' user's store on this host; not there: ImageNotFoundError."""
    size, detail = local_size(cli, image)
    if size is not None:
        return size
    who = cli.user or s.me()
    raise ImageNotFoundError(
        f"{why}; nor is it in {who}'s image store on this host, from which it would be streamed "
        f"to the node ({detail or 'podman image inspect failed'}). Put it there (`podman pull {image}` or "
        f"`podman load -i image.tar` as {who} on this host), or make it pullable from the nodes.",
        image=image,
    )


def _why_not_on_node(image: str, uid: str, node: str, policy: str, step_stderr: str) -> str:
    """Why the node lacks the image, for messages: the pull policy, or the pull's own error."""
    errors = [x.strip() for x in step_stderr.splitlines() if x.strip().startswith("Error:")]
    why = "pull_policy='never'" if policy == "never" else (errors[-1][:300] if errors else "the pull failed")
    return f"image {image} is not in the rootless image store of uid {uid} on node {node} and cannot be pulled there ({why})"


def _load_failed(code: int, stderr: str, image: str, node: str, sent: int) -> OCIExecutorError:
    mapped = s.node_error(stderr, code, image, node)
    if mapped is not None and code != s.LOAD_EXIT:
        return mapped
    line = next((x for x in stderr.splitlines() if x.startswith(s.NODE_ERROR)), "")
    detail = line[len(s.NODE_ERROR) :].strip() or " ".join(stderr.split())[-500:]
    return ImagePullError(
        f"could not load image {image} on node {node} after streaming {sent / 1e6:.1f} MB to it: {detail}. "
        "Check the space of the jobs' user's rootless store on that node (`srun -w NODE podman system df`) "
        "and that the image is whole here (`podman image inspect`), or load it on the node by hand "
        "(`podman load -i image.tar`).",
        image=image,
    )


def _step_ended(process: subprocess.Popen[bytes], node: str, image: str, stderr: str) -> OCIExecutorError:
    """The start step ended before the container started: its node check's error."""
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = -1
    mapped = s.node_error(stderr, code, image, node)
    if mapped is not None:
        return mapped
    return ContainerError(
        f"the job's step on node {node} ended ({code}) before its container started: "
        f"{' '.join(stderr.split())[-1000:] or 'no message'}"
    )


def _text(handle: IO[bytes]) -> str:
    handle.seek(0)
    return s.decode(handle.read())
