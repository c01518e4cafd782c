#!/usr/bin/env bash
# Start a throwaway Slurm cluster on this machine for oci-executor's slurm backend tests
# (run as root; no systemd): munge, slurmctld and two slurmd "nodes" (n1, n2) on one host.
# Debian's Slurm 22.05 is built with MULTIPLE_SLURMD, so both nodes run here, each on its
# own port. The test user (ocitest, made by setup-engines.sh) runs the jobs with its own
# rootless Podman. Each node is a machine of its own for that user's Podman: its slurmd runs
# in a mount namespace where the user's rootless store (~/.local/share/containers) is the
# node's own folder and /run/user/UID a fresh tmpfs, so an image on the submit host (this
# host's store) or on n1 is not on n2. The test image is loaded into every node's store here
# (once; again when the image changes); the backend streams any other image on demand.
#
#   stores   /var/lib/oci-executor-slurm/nodes/<node>/containers   (a node's, for the test user)
#
#   config   /run/oci-executor/slurm/slurm.conf   (clients: export SLURM_CONF=<that file>)
#   pids     /run/oci-executor/{munged,slurmctld,slurmd-n1,slurmd-n2}.pid
#   logs     /var/log/oci-executor-slurm/
#
# Idempotent: a second run only checks that the cluster answers. Called by the last line
# of scripts/setup-engines.sh; stopped by scripts/stop-engines.sh.
#
# A second, private cluster beside it (to try a config without disturbing the shared one):
#   OCI_SLURM_INSTANCE=x OCI_SLURM_PORT=7817 OCI_SLURM_NODES="x1 x2" bash scripts/setup-slurm.sh
# keeps its config, pids, logs and spool under .../x/ and uses ports 7817 (controller) and
# 7818, 7819 (nodes), and its own node stores (under .../x/); name its nodes apart from the
# shared ones all the same.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

TEST_USER="${OCI_TEST_USER:-ocitest}"
INSTANCE="${OCI_SLURM_INSTANCE:-}"
MUNGE_PIDFILE=/run/oci-executor/munged.pid
STATE_DIR=/run/oci-executor${INSTANCE:+/$INSTANCE}
CONF_DIR=$STATE_DIR/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/oci-executor-slurm${INSTANCE:+/$INSTANCE}
SPOOL=/var/spool/oci-executor-slurm${INSTANCE:+/$INSTANCE}
read -r -a NODES <<<"${OCI_SLURM_NODES:-n1 n2}"
CTLD_PORT=${OCI_SLURM_PORT:-6817}
PORT0=$((CTLD_PORT + 1))
NODE_ROOT=/var/lib/oci-executor-slurm${INSTANCE:+/$INSTANCE}/nodes
PACKAGES=(slurmctld slurmd slurm-client munge)
export SLURM_CONF=$CONF

T0=$(date +%s)
log()  { printf '[setup-slurm %3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die()  { printf '[setup-slurm] ERROR: %s\n' "$*" >&2; exit 1; }

[[ ${EUID} -eq 0 ]] || die "must run as root"
id "$TEST_USER" >/dev/null 2>&1 || die "no user $TEST_USER: run scripts/setup-engines.sh first"
TEST_UID=$(id -u "$TEST_USER")
TEST_GID=$(id -g "$TEST_USER")
TEST_HOME=$(getent passwd "$TEST_USER" | cut -d: -f6)
USER_STORE=$TEST_HOME/.local/share/containers

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "packages: all installed"
        return
    fi
    log "packages: installing ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d created=0 rc=0
    if [[ ! -e $policy ]]; then  # keep the packages' init scripts from starting daemons
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created=1
    fi
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$LOG_DIR/apt.log" 2>&1 || rc=$?
    ((created)) && rm -f "$policy"
    ((rc == 0)) || { tail -n 30 "$LOG_DIR/apt.log" >&2; die "apt-get failed (see $LOG_DIR/apt.log)"; }
}

# running PIDFILE PATTERN: the recorded process is alive and is what we started
running() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(cat "$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# start NAME PIDFILE PATTERN CMD...: start CMD detached (it writes its own pid file)
start() {
    local name=$1 pidfile=$2 pattern=$3
    shift 3
    if running "$pidfile" "$pattern"; then
        log "$name: running (pid $(cat "$pidfile"))"
        return
    fi
    rm -f "$pidfile"
    printf '\n==== %s: %s\n' "$(date -Is)" "$*" >>"$LOG_DIR/$name.out"
    (cd / && exec setsid "$@" </dev/null >>"$LOG_DIR/$name.out" 2>&1) &  # from /: see setup-engines.sh
    local i
    for ((i = 0; i < 100; i++)); do
        running "$pidfile" "$pattern" && { log "$name: started (pid $(cat "$pidfile"))"; return; }
        sleep 0.1
    done
    tail -n 20 "$LOG_DIR/$name.out" "$LOG_DIR/$name.log" 2>/dev/null >&2 || true
    die "$name did not start (see $LOG_DIR)"
}

write_conf() {
    local host want node i=0
    host=$(hostname -s)
    want="# Written by oci-executor scripts/setup-slurm.sh: a throwaway test cluster.
ClusterName=ocitest${INSTANCE}
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
InactiveLimit=30
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MinJobAge=5
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdPidFile=$STATE_DIR/slurmd-%n.pid
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmdSpoolDir=$SPOOL/slurmd-%n
StateSaveLocation=$SPOOL/ctld
"
    for node in "${NODES[@]}"; do
        want+="NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT0 + i)) CPUs=4 RealMemory=8192
"
        i=$((i + 1))
    done
    want+="PartitionName=debug Nodes=ALL Default=YES MaxTime=1440 State=UP
"
    install -d -m 0755 "$CONF_DIR" "$SPOOL/ctld"
    # Slurm's cgroup plugins enforce cpus (a cpuset) and memory (the job's memory cgroup: the
    # container's processes stay in it, rootless Podman on cgroup v1 makes none of its own),
    # and proctrack/cgroup ends every process of a job, conmon and the container included.
    local cgroup="# Written by oci-executor scripts/setup-slurm.sh.
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
CgroupAutomount=no
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
"
    if [[ ! -f $CONF_DIR/cgroup.conf ]] || [[ "$(cat "$CONF_DIR/cgroup.conf")"$'\n' != "$cgroup" ]]; then
        printf '%s' "$cgroup" >"$CONF_DIR/cgroup.conf"
        chmod 0644 "$CONF_DIR/cgroup.conf"
        CONF_CHANGED=1
    fi
    if [[ -f $CONF ]] && [[ "$(cat "$CONF")"$'\n' == "$want" ]] && ((CONF_CHANGED == 0)); then
        log "slurm.conf: up to date ($CONF)"
        return
    fi
    printf '%s' "$want" >"$CONF"
    chmod 0644 "$CONF"
    log "slurm.conf: written ($CONF)"
    CONF_CHANGED=1
}

CONF_CHANGED=0
mkdir -p "$LOG_DIR" "$STATE_DIR" "$(dirname "$MUNGE_PIDFILE")"
install_packages
write_conf

# munge: the key exists after installing the package; munged runs as user munge.
install -d -o munge -g munge -m 0755 /run/munge
if ! running "$MUNGE_PIDFILE" munged; then
    rm -f "$MUNGE_PIDFILE"
    su -s /bin/sh munge -c "munged -F --pid-file=/run/munge/munged.pid" </dev/null >>"$LOG_DIR/munged.out" 2>&1 &
    for ((i = 0; i < 50; i++)); do
        [[ -f /run/munge/munged.pid ]] && break
        sleep 0.1
    done
    [[ -f /run/munge/munged.pid ]] || die "munged did not start (see $LOG_DIR/munged.out)"
    cp /run/munge/munged.pid "$MUNGE_PIDFILE"
    log "munged: started (pid $(cat "$MUNGE_PIDFILE"))"
else
    log "munged: running (pid $(cat "$MUNGE_PIDFILE"))"
fi
munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not work (see $LOG_DIR/munged.out)"

# A slurmd started before the nodes had stores of their own shares this host's mount
# namespace (and so the test user's one store): it needs a restart too.
for node in "${NODES[@]}"; do
    if running "$STATE_DIR/slurmd-$node.pid" "slurmd -N $node" &&
        [[ $(readlink "/proc/$(cat "$STATE_DIR/slurmd-$node.pid")/ns/mnt") == "$(readlink /proc/self/ns/mnt)" ]]; then
        log "slurmd-$node: shares this host's image store: restarting the daemons"
        CONF_CHANGED=1
    fi
done

if ((CONF_CHANGED)); then  # a changed config needs fresh daemons
    for pidfile in "$STATE_DIR"/slurmd-*.pid "$STATE_DIR/slurmctld.pid"; do
        [[ -f $pidfile ]] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
    sleep 0.5
fi

start slurmctld "$STATE_DIR/slurmctld.pid" slurmctld slurmctld -f "$CONF"
# Each slurmd in a mount namespace of its own: the test user's store there is the node's.
runuser -u "$TEST_USER" -- mkdir -p "$USER_STORE"
install -d -o "$TEST_USER" -g "$TEST_GID" -m 0700 "/run/user/$TEST_UID"
NODE_NS='mount --bind "$1" "$2" && mount -t tmpfs -o "mode=0700,uid=$4,gid=$5" tmpfs "$3" && shift 5 && exec "$@"'
for node in "${NODES[@]}"; do
    install -d -m 0755 "$SPOOL/slurmd-$node" "$NODE_ROOT/$node"
    install -d -o "$TEST_USER" -g "$TEST_GID" -m 0700 "$NODE_ROOT/$node/containers"
    start "slurmd-$node" "$STATE_DIR/slurmd-$node.pid" "slurmd -N $node" \
        unshare --mount --propagation private bash -c "$NODE_NS" node-ns \
        "$NODE_ROOT/$node/containers" "$USER_STORE" "/run/user/$TEST_UID" "$TEST_UID" "$TEST_GID" \
        slurmd -N "$node" -f "$CONF"
done

# Wait until both nodes are idle (or mixed/allocated: jobs may already run).
for ((i = 0; i < 150; i++)); do
    states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u) || true
    ready=$(awk '$2 ~ /^(idle|mix|alloc)$/' <<<"$states" | wc -l)
    ((ready == ${#NODES[@]})) && break
    sleep 0.2
done
((ready == ${#NODES[@]})) || { echo "$states" >&2; die "nodes not ready (see $LOG_DIR)"; }
log "nodes: $(tr '\n' ' ' <<<"$states")"

# The test image in every node's store, as an admin would load it (the backend would
# stream it on the first task otherwise): again when the image here has changed.
TEST_IMAGE="${OCI_TEST_IMAGE:-oci-executor-test/python:3.11}"
as_user() { (cd / && runuser -u "$TEST_USER" -- env "XDG_RUNTIME_DIR=/run/user/$TEST_UID" "HOME=$TEST_HOME" "$@"); }
on_node() {  # on_node NODE CMD...: CMD as the test user in that node's mount namespace
    local pid
    pid=$(cat "$STATE_DIR/slurmd-$1.pid")
    shift
    nsenter "--mount=/proc/$pid/ns/mnt" -- runuser -u "$TEST_USER" -- \
        env "XDG_RUNTIME_DIR=/run/user/$TEST_UID" "HOME=$TEST_HOME" "$@"
}
want=$(as_user podman image inspect --format '{{.Id}}' "$TEST_IMAGE" 2>/dev/null) ||
    die "no image $TEST_IMAGE in $TEST_USER's store: run scripts/setup-engines.sh first"
for node in "${NODES[@]}"; do
    have=$(cd / && on_node "$node" podman image inspect --format '{{.Id}}' "$TEST_IMAGE" 2>/dev/null) || have=
    if [[ $have == "$want" ]]; then
        log "image: $TEST_IMAGE is in $node's store"
        continue
    fi
    as_user podman save "$TEST_IMAGE" | (cd / && on_node "$node" podman load -q) >/dev/null ||
        die "could not load $TEST_IMAGE into $node's store"
    (cd / && on_node "$node" podman image prune -f) >/dev/null 2>&1 || true
    log "image: $TEST_IMAGE loaded into $node's store"
done

# The test user runs a job with rootless Podman on each node.
for node in "${NODES[@]}"; do
    out=$(su -s /bin/bash "$TEST_USER" -c "cd /tmp && SLURM_CONF=$CONF srun -w $node -t 1 -Q \
        env XDG_RUNTIME_DIR=/run/user/\$(id -u) podman run --rm --network none $TEST_IMAGE \
        python3 -c 'print(\"ok\")'" </dev/null 2>&1) || true
    [[ $out == ok ]] || die "rootless Podman under srun on $node failed: $out"
done
log "rootless Podman under srun: ok on ${NODES[*]}"
echo "Slurm cluster up (took $(( $(date +%s) - T0 ))s): export SLURM_CONF=$CONF; logs in $LOG_DIR"
