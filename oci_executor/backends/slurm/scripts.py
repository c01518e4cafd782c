"""The shell run on the nodes: the checks every step starts with, the job script that holds
one container, and the container's start step. Exit codes and an error prefix carry a node's
failed check back to the driver (:func:`oci_executor.backends.slurm.cli.node_error`)."""

from __future__ import annotations

from oci_executor.labels import LABEL_PREFIX

JOB_NAME = "oci-executor"
"""Every job of ours has this name (the sweeps find them by it)."""
CONTAINER_PREFIX = "oci-slurm-"
"""A container is named ``oci-slurm-<job id>-<node>``; its hostname is the same."""
JOB_LABEL = f"{LABEL_PREFIX}.slurm-job"
NODE_LABEL = f"{LABEL_PREFIX}.slurm-node"
ACTIVE_STATES = frozenset(
    "PENDING CONFIGURING RUNNING COMPLETING SUSPENDED REQUEUED REQUEUE_HOLD REQUEUE_FED "
    "RESIZING SIGNALING STAGE_OUT STOPPED RESV_DEL_HOLD".split()
)
_ACTIVE = " ".join(sorted(ACTIVE_STATES))
_ACTIVE = " ".join(sorted(ACTIVE_STATES))

NODE_ERROR = "oci-executor-node-error:"
RUNTIME_DIR_EXIT = 97
NO_PODMAN_EXIT = 98
NO_IMAGE_EXIT = 95
PULL_EXIT = 96

NODE_CHECKS = rf"""
oci_node() {{
u=$(id -u); h=${{SLURMD_NODENAME:-$(hostname -s)}}
export HOME=$(getent passwd "$u" | cut -d: -f6)
d=/run/user/$u
if [ -e "$d" ]; then
  if [ ! -d "$d" ] || [ ! -O "$d" ] || [ ! -w "$d" ] || [ ! -x "$d" ]; then
    echo "{NODE_ERROR} runtime-dir: $d on node $h is not a folder owned and writable by uid $u" >&2
    return {RUNTIME_DIR_EXIT}
  fi
else
  d=/tmp/podman-run-$u
  mkdir -p -m 700 "$d" 2>/dev/null
  if [ ! -O "$d" ] || [ ! -w "$d" ]; then
    echo "{NODE_ERROR} runtime-dir: neither /run/user/$u nor $d is usable on node $h" >&2
    return {RUNTIME_DIR_EXIT}
  fi
fi
export XDG_RUNTIME_DIR=$d
unset CONTAINER_HOST DOCKER_HOST
if ! command -v podman >/dev/null 2>&1; then
  echo "{NODE_ERROR} no-podman: podman is not on PATH ($PATH) on node $h" >&2
  return {NO_PODMAN_EXIT}
fi
}}
"""
NODE_PRELUDE = NODE_CHECKS + "oci_node || exit $?\n"
"""Bash run first by every step: one fixed runtime folder, and Podman there."""

HOLDER = rf"""#!/bin/bash
# oci-executor: holds the allocation for one container and removes it when the job ends.
NAME={CONTAINER_PREFIX}$SLURM_JOB_ID-$SLURMD_NODENAME
{NODE_CHECKS}
if ! oci_node 2>/dev/null; then  # the driver's check of the node reports it; it cancels the job
  sleep 60 & wait $!
  exit 1
fi
PIDFILE=$XDG_RUNTIME_DIR/$NAME.conmon
STARTING=$XDG_RUNTIME_DIR/$NAME.starting
gone() {{ podman rm -f -t 0 "$NAME" >/dev/null 2>&1; rm -f "$PIDFILE" "$STARTING"; }}
trap 'gone; exit 0' TERM INT HUP
t=0
while [ ! -s "$PIDFILE" ]; do  # the driver starts the container (a pull may take a while)
  if [ "$t" -ge "$START_WAIT" ] && ! kill -0 "$(cat "$STARTING" 2>/dev/null)" 2>/dev/null; then
    gone; exit 0  # no start step came, or it died: its driver is gone
  fi
  sleep 1 & wait $!
  t=$((t + 1))
done
(  # containers of ours on this node whose job ended without its trap (SIGKILL)
  for c in $(podman ps -a --filter label={JOB_LABEL} --filter label={NODE_LABEL}="$SLURMD_NODENAME" \
             --format '{{{{.Names}}}}' 2>/dev/null); do
    j=${{c#{CONTAINER_PREFIX}}}; j=${{j%%-*}}
    [ "$j" = "$SLURM_JOB_ID" ] && continue
    state=$(squeue -h -j "$j" -o %T 2>&1) || case "$state" in *"Invalid job id"*) state= ;; *) continue ;; esac
    case " {_ACTIVE} " in *" $state "*) [ -n "$state" ] && continue ;; esac
    podman rm -f -t 0 "$c" >/dev/null 2>&1
  done
) </dev/null >/dev/null 2>&1 &
while kill -0 "$(cat "$PIDFILE" 2>/dev/null)" 2>/dev/null; do sleep 1 & wait $!; done
gone
"""
"""The job script: waits for the container, ends when it ends; its trap removes it on scancel
and at the time limit."""

START = rf"""
echo $$ >"$XDG_RUNTIME_DIR/$NAME.starting"
img=$1; policy=$2; shift 2
if [ "$policy" = always ] || ! podman image exists "$img"; then
  if [ "$policy" = never ]; then
    echo "{NODE_ERROR} image $img is not in the rootless image store of uid $u on node $h" >&2
    exit {NO_IMAGE_EXIT}
  fi
  podman pull -q "$img" >/dev/null || {{
    echo "{NODE_ERROR} could not pull image $img on node $h" >&2
    exit {PULL_EXIT}
  }}
fi
args=()
for a in "$@"; do
  [ "$a" = @PIDFILE@ ] && a=--conmon-pidfile=$XDG_RUNTIME_DIR/$NAME.conmon
  args+=("$a")
done
exec podman "${{args[@]}}"
"""
"""The container's start step (after NODE_PRELUDE, with NAME set): the image in the node
user's store (pulled per the pull policy), then ``podman run``; the holder watches the conmon
pid file the run writes."""
