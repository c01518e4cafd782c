"""``oci-executor env ls / build / prune``: the environments on this machine, and their copies
on the remote engines this store copied them to (named volumes, see :mod:`.volumes`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from oci_executor.environments import store, volumes
from oci_executor.errors import OCIExecutorError


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _packages(wheels: list[str]) -> str:
    return ", ".join("==".join(w.split("-")[:2]) for w in wheels)


def _engines() -> Iterator[volumes.EngineVolumes]:
    """Each remote engine holding copies, connected (one that does not answer is named on stderr)."""
    from oci_executor.backend import BackendConfig
    from oci_executor.registry import select_backend

    for known in volumes.remembered():
        try:
            backend = select_backend(
                known["backend"],
                BackendConfig(known["address"] or None, ssh_identity=known["ssh_identity"] or None),
            )
        except (OCIExecutorError, KeyError) as exc:
            print(f"warning: skipped {known.get('where', '?')}: {exc}", file=sys.stderr)
            continue
        try:
            remote = backend.environment_volumes()
            if remote is not None:
                yield remote
        except OCIExecutorError as exc:
            print(f"warning: could not reach {known['where']}: {exc}", file=sys.stderr)
        finally:
            backend.close()


def _remote_entries() -> Iterator[tuple[volumes.EngineVolumes, store.Entry]]:
    for remote in _engines():
        try:
            found = volumes.entries(remote)
        except OCIExecutorError as exc:
            print(f"warning: could not list the environments on {remote.where()}: {exc}", file=sys.stderr)
            continue
        for entry in found:
            yield remote, entry


def cmd_ls(args: argparse.Namespace, age: Callable[[float | None], str]) -> int:
    found = store.entries()
    if not args.local:
        found += [entry for _remote, entry in _remote_entries()]
    if args.json:
        print(json.dumps([e.__dict__ for e in found], indent=1))
        return 0
    if not found:
        print(f"no environments in {store.root()}")
        return 0
    now = time.time()
    rows = [["KEY", "PACKAGES", "SIZE", "LAST USE", "WHERE", "ENGINES", "TARGET"]]
    for e in found:
        used = age(now - e.last_use) + " ago" if e.last_use else "never"
        where = "this host" if e.path.startswith("/") else f"volume on {e.engines[0]}"
        engines = ", ".join(e.engines) if e.path.startswith("/") else ""
        rows.append([e.key, _packages(e.packages), _size(e.size), used, where, engines or "-", e.target])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"({store.root()})")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from oci_executor import settings
    from oci_executor.environments.attach import environment_for
    from oci_executor.environments.requirements import declared
    from oci_executor.registry import select_backend

    try:
        values = settings.parse(
            {
                **settings.defaults(),
                **({"image": args.image} if args.image else {}),
                "backend": args.backend,
                "address": args.address or "",
                "ssh_identity": args.ssh_identity or "",
            }
        )
        requirements = declared(args.packages, args.requirements or "", [])
        if not requirements:
            print("error: name the packages (PACKAGE ... or -r requirements.txt)", file=sys.stderr)
            return 2
        backend = select_backend(values["backend"], settings.backend_config(values))
        try:
            spec = settings.container_spec(values, {})
            env = environment_for(
                backend,
                spec,
                requirements,
                wheels_only=not args.allow_sdists,
                progress=_show,
                refresh=args.refresh,
            )
        finally:
            backend.close()
    except OCIExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    where = f"volume {env.volume}" if env.volume else env.path
    print(f"environment {env.key} for {values['image']} on {backend.describe()}: {where}")
    return 0


_VERBS = {"resolve": "resolving", "download": "downloaded", "install": "installing"}


def _show(step: str, detail: str) -> None:
    print(f"  {_VERBS.get(step, step)} {detail}", flush=True)


def cmd_prune(args: argparse.Namespace) -> int:
    now = time.time()
    removed = kept = 0
    for e in store.entries():
        if args.key and e.key not in args.key:
            continue
        if now - (e.last_use or e.built) < args.older_than:
            continue
        if args.dry_run:
            print(f"would remove {e.key} ({_size(e.size)}, {_packages(e.packages)})")
            continue
        if store.remove(e.key):
            removed += 1
            print(f"removed {e.key} ({_size(e.size)}, {_packages(e.packages)})")
        else:
            kept += 1
            print(f"kept {e.key}: in use by a running process")
    if not args.dry_run:
        _sweep_tmp()
    if not args.local:
        more, still = _prune_remote(args, now)
        removed, kept = removed + more, kept + still
    print(f"{removed} removed, {kept} in use")
    return 0


def _prune_remote(args: argparse.Namespace, now: float) -> tuple[int, int]:
    """Prune the copies on remote engines: never one a process here or a container there uses."""
    removed = kept = 0
    for remote in _engines():
        try:
            for e in volumes.entries(remote):
                if (args.key and e.key not in args.key) or now - (e.last_use or e.built) < args.older_than:
                    continue
                if args.dry_run:
                    print(
                        f"would remove {e.key} from {remote.where()} ({_size(e.size)}, {_packages(e.packages)})"
                    )
                    continue
                outcome = volumes.remove(remote, e.key)
                if outcome == "removed":
                    removed += 1
                    print(f"removed {e.key} from {remote.where()} ({_size(e.size)}, {_packages(e.packages)})")
                else:
                    kept += 1
                    print(f"kept {e.key} on {remote.where()}: {outcome}")
            if not args.dry_run:
                for name in volumes.sweep(remote):
                    print(f"swept {name} on {remote.where()} (left by a builder that died)")
        except OCIExecutorError as exc:
            print(f"warning: could not prune on {remote.where()}: {exc}", file=sys.stderr)
    return removed, kept


def _sweep_tmp() -> None:
    """Remove what dead builders left in ``tmp/`` (each entry names its builder's PID)."""
    folder = store.path("tmp")
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        parts = name.split(".")
        pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
        if pid and not store.pid_alive(pid):
            store.discard(os.path.join(folder, name))


def add_parser(sub: Any, parse_duration: Callable[[str], float], age: Callable[[float | None], str]) -> None:
    """``env`` and its verbs, under the ``oci-executor`` command."""
    env = sub.add_parser("env", help="environments of declared packages: ls, build, prune")
    verbs = env.add_subparsers(dest="env_command", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", help="list environments: key, packages, size, last use, engines")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.add_argument("--local", action="store_true", help="only this host's store (no remote engines)")
    ls.set_defaults(func=lambda a: cmd_ls(a, age))
    build = verbs.add_parser("build", help="build an environment ahead of a run (progress per package)")
    build.add_argument("packages", nargs="*", metavar="PACKAGE", help="requirements, as pip takes them")
    build.add_argument("-r", "--requirements", help="a requirements file")
    build.add_argument("--image", help="the image the tasks run in (default: the executor's default)")
    build.add_argument("--backend", default="auto", help="docker, podman, local (default: auto)")
    build.add_argument("--address", help="the engine's address (default: the backend's)")
    build.add_argument("--ssh-identity", help="private key file for an ssh:// address")
    build.add_argument("--allow-sdists", action="store_true", help="let pip build wheels from sdists here")
    build.add_argument("--refresh", action="store_true", help="resolve again (pick up new releases)")
    build.set_defaults(func=cmd_build)
    prune = verbs.add_parser("prune", help="remove environments no running process uses")
    prune.add_argument(
        "--older-than", type=parse_duration, default=0.0, metavar="DURATION", help="unused this long"
    )
    prune.add_argument("--key", action="append", default=[], help="only this key (repeatable)")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed")
    prune.add_argument("--local", action="store_true", help="only this host's store (no remote engines)")
    prune.set_defaults(func=cmd_prune)
