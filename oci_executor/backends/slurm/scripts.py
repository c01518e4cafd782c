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
LOAD_EXIT = 94

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
IMAGE_LINE = "oci-executor-image"
"""The start step's next lines: ``IMAGE_LINE ok`` (the image is on the node: the container
starts), ``IMAGE_LINE waiting`` (another job is loading it there), ``IMAGE_LINE wanted UID``
(neither on the node nor pullable there: the step waits for one line on its stdin, ``loaded``
once the driver has streamed it in, :mod:`.images`)."""

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
have() {{ podman image exists "$img" </dev/null 9>&-; }}
if [ "$policy" = always ] || ! have; then
  if [ "$policy" = never ] || ! podman pull -q "$img" </dev/null >/dev/null 9>&-; then
    if have; then  # pull_policy="always", and the pull failed
      echo "{NODE_ERROR} could not pull image $img on node $h" >&2
      exit {PULL_EXIT}
    fi
    # Not on the node, not pullable here: the driver streams it from its own store, once per
    # node and image (a lock; a job that waits finds the image loaded when it gets the lock).
    exec 9>"$XDG_RUNTIME_DIR/oci-executor-image-$h-$(printf %s "$img" | cksum | cut -d' ' -f1).lock"
    flock -n 9 2>/dev/null || {{ echo "{IMAGE_LINE} waiting"; flock 9 2>/dev/null; }}
    if ! have; then
      echo "{IMAGE_LINE} wanted $u"
      read -r reply || reply=
      if [ "$reply" != loaded ] || ! have; then
        echo "{NODE_ERROR} image $img was not loaded into the rootless image store of uid $u on node $h" >&2
        exit {NO_IMAGE_EXIT}
      fi
    fi
    exec 9>&-
  fi
fi
echo "{IMAGE_LINE} ok"
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
policy, else streamed from the driver's store: :mod:`.images`), then runs ``podman run -i`` on the step's pipes. Its trap removes the container on
``scancel`` and at the time limit (Slurm would kill only the podman client; conmon would keep
the container); when the container ends, so does the job."""

LOAD = rf"""
img=$1
out=$(podman load 2>&1) || {{
  echo "{NODE_ERROR} podman load failed on node $h: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')" >&2
  exit {LOAD_EXIT}
}}
if ! podman image exists "$img"; then
  echo "{NODE_ERROR} the stream held no image $img ($(printf '%s' "$out" | tail -n 1)) on node $h" >&2
  exit {LOAD_EXIT}
fi
printf '%s\n' "$out" | tail -n 1
"""
"""A step loading the image archive on its stdin (``podman save`` on the driver's host) into
the job user's rootless store on the node (after NODE_CHECKS)."""
SAVE = r"""
img=$1
if [ "$2" = size ]; then exec podman image inspect --format '{{.Size}}' "$img"; fi
exec podman save "$img"
"""
"""Run on the driver's host as the jobs' user (after NODE_CHECKS): the image's size, or the
image as an archive on stdout."""
