#!/usr/bin/env bash
# Stop the services that scripts/setup-engines.sh started: the test Slurm cluster
# (slurmd n1/n2, slurmctld, munged; its jobs are cancelled first), the test sshd
# (scripts/setup-sshd.sh), the rootless Podman service of the test user, the rootful Podman
# service, dockerd and the test registry.
# Only processes recorded in /run/oci-executor/*.pid are touched. Images, the test
# user and the cached root filesystems stay; rerun setup-engines.sh to start again.
set -euo pipefail

TEST_USER="${OCI_TEST_USER:-ocitest}"
STATE_DIR=/run/oci-executor
TIMEOUT=40

log()  { printf '[stop-engines] %s\n' "$*"; }
[[ ${EUID} -eq 0 ]] || { echo "[stop-engines] ERROR: must run as root" >&2; exit 1; }

# stop_pidfile NAME PIDFILE PATTERN: SIGTERM the recorded pid if its command line
# matches PATTERN, wait up to $TIMEOUT s, then SIGKILL.
stop_pidfile() {
    local name=$1 pidfile=$2 pattern=$3 pid i
    if [[ ! -f $pidfile ]]; then
        log "$name: not started by setup-engines.sh (no $pidfile)"
        return 0
    fi
    pid=$(cat "$pidfile")
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null ||
        ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"; then
        log "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    for ((i = 0; i < TIMEOUT * 4; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name: still running after ${TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "$name: stopped (pid $pid)"
}

# The Slurm cluster first: its jobs run the test user's rootless containers.
SLURM_CONF=$STATE_DIR/slurm/slurm.conf
if [[ -f $SLURM_CONF ]] && [[ -f $STATE_DIR/slurmctld.pid ]]; then
    SLURM_CONF=$SLURM_CONF timeout 20 scancel --name=oci-executor 2>/dev/null || true
fi
for pidfile in "$STATE_DIR"/slurmd-*.pid; do
    [[ -f $pidfile ]] || continue
    node=$(basename "$pidfile" .pid)
    stop_pidfile "$node" "$pidfile" "slurmd -N ${node#slurmd-}"
done
stop_pidfile "slurmctld" "$STATE_DIR/slurmctld.pid" "slurmctld"
# Slurm's cgroup plugins leave their (empty) folders behind: /sys/fs/cgroup/*/slurm_<node>/.
for node_dir in /sys/fs/cgroup/*/slurm_n[0-9]*; do
    [[ -d $node_dir ]] && find "$node_dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
stop_pidfile "munged" "$STATE_DIR/munged.pid" "munged"

stop_pidfile "sshd (remote-engine tests)" "$STATE_DIR/sshd.pid" "sshd"
stop_pidfile "podman (rootless, $TEST_USER)" "$STATE_DIR/podman-rootless.pid" "podman system service"
# Rootless Podman re-executes itself in a user namespace, under another pid than the recorded one.
if uid=$(id -u "$TEST_USER" 2>/dev/null) && pkill -TERM -f "podman system service --time=0 unix:///run/user/$uid/podman/podman.sock"; then
    log "podman (rootless, $TEST_USER): re-executed service process stopped"
fi
# The rootless user namespace is held by a pause process (catatonit -P); end it too so
# that nothing of the test user's Podman keeps running. Podman recreates it on demand.
if uid=$(id -u "$TEST_USER" 2>/dev/null); then
    pause_pidfile=/run/user/$uid/libpod/tmp/pause.pid
    if [[ -f $pause_pidfile ]]; then
        pid=$(cat "$pause_pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && [[ $(stat -c %u "/proc/$pid" 2>/dev/null) == "$uid" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            log "podman (rootless, $TEST_USER): pause process $pid ended"
        fi
        rm -f "$pause_pidfile"
    fi
fi
stop_pidfile "podman (rootful)" "$STATE_DIR/podman-rootful.pid" "podman system service"
stop_pidfile "dockerd" "$STATE_DIR/dockerd.pid" "dockerd"
stop_pidfile "registry" "$STATE_DIR/registry.pid" "docker-registry"
