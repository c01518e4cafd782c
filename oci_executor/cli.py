"""The ``oci-executor`` command line: ``demo``, ``doctor``, ``pull``, ``image``, ``ls``, ``gc``,
``env``, and ``logs``, ``trace``, ``report`` (:mod:`oci_executor.cli_observe`).

``doctor`` and ``demo`` import their modules only when run, so ``ls`` and ``gc`` work
without Covalent's import cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence

from oci_executor import cli_observe, inventory
from oci_executor.doctor import add_arguments as doctor_arguments
from oci_executor.environments import command as env_command
from oci_executor.errors import OCIExecutorError
from oci_executor.settings import defaults
from oci_executor.task import host_python_version

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 90s, 15m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def short_id(container_id: str) -> str:
    """An engine's hex id cut to 12 characters, as the engines show it; a name (a Slurm job's
    ``oci-slurm-<job>-<node>``) whole."""
    is_hex = len(container_id) > 12 and all(c in "0123456789abcdef" for c in container_id)
    return container_id[:12] if is_hex else container_id


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _engine(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if not sep or not name or not address:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give BACKEND=ADDRESS, e.g. podman=unix:///run/podman/podman.sock"
        )
    return name, address


@contextlib.contextmanager
def _entries(args: argparse.Namespace) -> Iterator[list[inventory.Entry]]:
    """Our containers on every engine (closing the connections afterwards)."""
    backends = list(inventory.engines(args.engine))
    if args.backend:
        for backend in [b for b in backends if b.name not in args.backend]:
            backend.close()
        backends = [b for b in backends if b.name in args.backend]
    try:
        entries, problems = inventory.listing(backends)
        for line in problems:
            print(f"skipped {line}", file=sys.stderr)
        yield entries
    finally:
        for backend in backends:
            backend.close()


def cmd_ls(args: argparse.Namespace) -> int:
    with _entries(args) as entries:
        return _print_ls(entries, args.json)


def _print_ls(entries: list[inventory.Entry], as_json: bool) -> int:
    if as_json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        print("no containers of ours on any reachable engine")
        return 0
    now = time.time()
    rows = [["ENGINE", "CONTAINER", "STATE", "AGE", "DISPATCH", "NODE", "OWNER"]]
    rows += [
        [
            e.engine,
            short_id(e.container.id),
            e.container.state,
            format_age(e.age(now)),
            e.dispatch,
            e.node,
            e.owner,
        ]
        for e in sorted(entries, key=lambda e: (e.engine, e.container.created or 0))
    ]
    print(_table(rows))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with _entries(args) as entries:
        doomed = inventory.orphans(entries, args.older_than)
        failed = 0
        for entry in doomed:
            what = f"{entry.engine}: {short_id(entry.container.id)} ({entry.container.state}, dispatch {entry.dispatch or '?'})"
            if args.dry_run:
                print(f"would remove {what}")
                continue
            try:
                entry.backend.remove_managed(entry.container.id)
                print(f"removed {what}")
            except OCIExecutorError as exc:
                failed += 1
                print(f"could not remove {what}: {exc}", file=sys.stderr)
    kept = len(entries) - len(doomed)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(doomed) - failed} orphaned container(s); kept {kept} whose owner is alive or unknown")
    return 1 if failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from oci_executor import doctor

    return doctor.run(args)


@contextlib.contextmanager
def pull_progress_bar() -> Iterator[None]:
    """A live progress bar (on stderr) for every image pull of this process while the block runs."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

    from oci_executor import progress

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        DownloadColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
    ) as bar:
        layers: dict[tuple[str, str], TaskID] = {}

        def show(event: progress.PullProgress) -> None:
            if not event.layer:
                return
            key = (event.image, event.layer)
            if key not in layers:
                name = f"{event.image.rsplit('/', 1)[-1]} {event.layer}"
                layers[key] = bar.add_task(name, total=event.total, status="")
            task = layers[key]
            if event.done:
                total = bar.tasks[task].total or 1
                bar.update(task, total=total, completed=total, status=event.status.lower())
            else:
                bar.update(task, total=event.total, completed=event.current or 0, status=event.status.lower())

        with progress.listen(show):
            yield


def cmd_pull(args: argparse.Namespace) -> int:
    from oci_executor.backend import BackendConfig
    from oci_executor.registry import select_backend

    try:
        backend = select_backend(args.backend, BackendConfig(address=args.address, pull_policy="always"))
    except OCIExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        ensure_image = getattr(backend, "ensure_image", None)
        if ensure_image is None:
            print(f"error: the {backend.name} backend runs no images: nothing to pull", file=sys.stderr)
            return 1
        with pull_progress_bar():
            ensure_image(args.image)
    except OCIExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()
    print(f"pulled {args.image} into the {backend.describe()}")
    return 0


def cmd_image_copy(args: argparse.Namespace) -> int:
    from oci_executor import images

    try:
        source = images.parse(args.source, args.from_address)
        dest = images.parse(args.dest, args.to_address, "" if source.kind == "file" else source.image)
        with pull_progress_bar():
            print(images.copy(source, dest))
    except OCIExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    from oci_executor import hostimage, images
    from oci_executor.backend import BackendConfig
    from oci_executor.registry import select_backend

    try:
        backend = select_backend(args.backend, BackendConfig(address=args.address))
        try:
            if getattr(backend, "ensure_image", None) is None:
                print(f"error: the {backend.name} backend runs no images: nothing to build", file=sys.stderr)
                return 1
            with pull_progress_bar():
                name = hostimage.build(backend, args.name)
            print(
                f"Built {name} from this host's Python {host_python_version()} into the {images.store_name(backend)}."
            )
        finally:
            backend.close()
    except OCIExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """``oci-executor image copy`` and ``oci-executor image build``."""
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    copy = verbs.add_parser(
        "copy",
        help="copy an image between stores without a registry (docker:IMAGE, podman:IMAGE, file:PATH)",
    )
    copy.add_argument(
        "source", metavar="SRC", help="docker:IMAGE, podman:IMAGE or file:PATH (a saved archive)"
    )
    copy.add_argument("dest", metavar="DEST", help="docker, podman (same name), podman:IMAGE or file:PATH")
    copy.add_argument("--from-address", help="SRC's engine address (default: the backend's own)")
    copy.add_argument("--to-address", help="DEST's engine address (default: the backend's own)")
    copy.set_defaults(func=cmd_image_copy)
    build = verbs.add_parser("build", help="build an image from this host's Python (no registry, no root)")
    build.add_argument(
        "name", nargs="?", default=None, help=f"default: oci-executor/python:{host_python_version()}"
    )
    build.add_argument("--backend", default="auto", help="docker, podman (default: auto)")
    build.add_argument("--address", help="the engine's address (default: the backend's)")
    build.set_defaults(func=cmd_image_build)


def cmd_demo(args: argparse.Namespace) -> int:
    from oci_executor.covalent import demo
    from oci_executor.hostimage import host_image_name

    images = [args.image] if args.image else [defaults()["image"], TEST_IMAGE, host_image_name()]
    with pull_progress_bar():
        return demo.run(images, args.backend)


TEST_IMAGE = f"oci-executor-test/python:{host_python_version()}"
"""The image scripts/setup-engines.sh builds; the demo uses it when the default image cannot be had."""


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (``oci-executor demo``; defined here so that building the parser
    imports no Covalent)."""
    parser.add_argument(
        "--image",
        default=os.environ.get("OCI_EXECUTOR_IMAGE"),
        help=f"image with the host's Python (default: $OCI_EXECUTOR_IMAGE, else "
        f"{defaults()['image']}, else {TEST_IMAGE}, else oci-executor/python:X.Y built from this host's Python)",
    )
    parser.add_argument("--backend", default=None, help="force a backend instead of probing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oci-executor", description="Run Covalent electrons in OCI containers."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the seed workflow (add, then multiply: 15) on the best backend")
    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    doctor = sub.add_parser("doctor", help="check each backend, the image and covalent.conf")
    doctor_arguments(doctor)
    doctor.set_defaults(func=cmd_doctor)

    pull = sub.add_parser("pull", help="pull an image into a backend's store, with a progress bar")
    pull.add_argument("image")
    pull.add_argument("--backend", default="auto", help="docker, podman, ... (default: auto)")
    pull.add_argument("--address", help="the engine's address (default: the backend's)")
    pull.set_defaults(func=cmd_pull)

    image = sub.add_parser("image", help="copy images between stores, or build one from this host's Python")
    add_image_arguments(image)

    for name, func, text in (
        ("ls", cmd_ls, "list our containers on every reachable engine"),
        ("gc", cmd_gc, "remove our containers whose driver process is gone"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--engine",
            action="append",
            type=_engine,
            default=[],
            metavar="BACKEND=ADDRESS",
            help="also visit this engine, e.g. docker=tcp://host:2375 (repeatable)",
        )
        cmd.add_argument(
            "--backend",
            action="append",
            default=[],
            metavar="NAME",
            help="visit only this backend's engines, e.g. slurm (repeatable; default: all)",
        )
        cmd.set_defaults(func=func)
        if name == "ls":
            cmd.add_argument("--json", action="store_true", help="print JSON")
        else:
            cmd.add_argument("--dry-run", action="store_true", help="list what would be removed")
            cmd.add_argument(
                "--older-than",
                type=parse_duration,
                default=0.0,
                metavar="DURATION",
                help="only containers created at least this long ago (90s, 15m, 2h, 1d)",
            )
    env_command.add_parser(sub, parse_duration, format_age)
    cli_observe.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
