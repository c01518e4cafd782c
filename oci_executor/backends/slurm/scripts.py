"""The shell run on the nodes: the checks every step starts with, and the job's start step
(which runs the container on the step's pipes). Exit codes and an error prefix carry a node's
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

READY = "oci-executor-step-on"
"""The start step's first line: ``READY <job id> <node>`` (the allocation is made, the step runs)."""

START = rf"""
NAME={CONTAINER_PREFIX}$SLURM_JOB_ID-$SLURMD_NODENAME
echo "{READY} $SLURM_JOB_ID $SLURMD_NODENAME"
oci_node || exit $?
img=$1; policy=$2; shift 2
gone() {{ podman rm -f -t 0 "$NAME" >/dev/null 2>&1; }}
trap 'gone; exit 143' TERM INT HUP
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
for a in "$@"; do  # the job and node are known here only
  case $a in
    *=@NAME@) a=${{a%@NAME@}}$NAME ;;
    *=@JOB@) a=${{a%@JOB@}}$SLURM_JOB_ID ;;
    *=@NODE@) a=${{a%@NODE@}}$SLURMD_NODENAME ;;
  esac
  args+=("$a")
done
exec 3<&0  # a background job's stdin would be /dev/null: give podman the step's own
podman "${{args[@]}}" <&3 3<&- &
wait $!
code=$?
scancel --quiet "$SLURM_JOB_ID" >/dev/null 2>&1  # the job ends with its container, even if srun died
exit $code
"""
"""The job's one step, run by the ``srun`` that makes the allocation (after NODE_CHECKS): it
says where it runs, checks the node, sweeps the node, has the image (pulled per the pull
policy), then runs ``podman run -i`` on the step's pipes. Its trap removes the container on
``scancel`` and at the time limit (Slurm would kill only the podman client; conmon would keep
the container); when the container ends, so does the job."""
