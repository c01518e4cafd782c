#!/usr/bin/env bash
# A real OpenSSH server for oci-executor's remote-engine tests (run as root; no systemd).
#
#   * sshd on 127.0.0.1:$OCI_TEST_SSH_PORT (22422), its own config, key-only authentication
#   * client keys (no passphrase) for root and for the rootless test user:
#       /etc/oci-executor/ssh/id_root      logs in as root     (Docker: ssh://root@127.0.0.1:PORT)
#       /etc/oci-executor/ssh/id_ocitest   logs in as ocitest  (rootless Podman:
#                         ssh://ocitest@127.0.0.1:PORT/run/user/UID/podman/podman.sock)
#   * the server's host key in root's ~/.ssh/known_hosts as [127.0.0.1]:PORT, so no prompt
#   * pid file /run/oci-executor/sshd.pid (scripts/stop-engines.sh stops it)
#
# Idempotent: a second run checks that both logins work. setup-engines.sh calls it last.
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
export DEBIAN_FRONTEND=noninteractive

TEST_USER="${OCI_TEST_USER:-ocitest}"
PORT="${OCI_TEST_SSH_PORT:-22422}"
STATE_DIR=/run/oci-executor
CONF_DIR=/etc/oci-executor/ssh
CONFIG=$CONF_DIR/sshd_config
PIDFILE=$STATE_DIR/sshd.pid
LOG=/var/log/oci-executor-sshd.log
MARK="oci-executor-test"

log() { printf '[setup-sshd] %s\n' "$*"; }
die() { printf '[setup-sshd] ERROR: %s\n' "$*" >&2; exit 1; }
[[ ${EUID} -eq 0 ]] || die "must run as root"
id -u "$TEST_USER" >/dev/null 2>&1 || die "no user $TEST_USER: run scripts/setup-engines.sh first"

# ----------------------------------------------------------------- package --
if [[ ! -x /usr/sbin/sshd ]]; then
    log "installing openssh-server"
    policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then   # keep the package's init script from starting its own sshd
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created=1
    fi
    rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server openssh-client; } \
        >/var/log/oci-executor-apt-sshd.log 2>&1 || rc=$?
    ((created)) && rm -f "$policy"
    ((rc == 0)) || { tail -n 20 /var/log/oci-executor-apt-sshd.log >&2; die "apt-get failed"; }
fi

# -------------------------------------------------------------------- keys --
install -d -m 0700 "$CONF_DIR" /run/sshd
[[ -f $CONF_DIR/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C "$MARK-host" -f "$CONF_DIR/host_ed25519"

# authorize USER KEYFILE: the key may log in as USER (its line added once)
authorize() {
    local user=$1 key=$2 home
    home=$(getent passwd "$user" | cut -d: -f6)
    [[ -f $key ]] || ssh-keygen -q -t ed25519 -N '' -C "$MARK-$user" -f "$key"
    install -d -m 0700 -o "$user" -g "$(id -gn "$user")" "$home/.ssh"
    touch "$home/.ssh/authorized_keys"
    grep -qF "$(cut -d' ' -f2 "$key.pub")" "$home/.ssh/authorized_keys" || cat "$key.pub" >>"$home/.ssh/authorized_keys"
    chown "$user:$(id -gn "$user")" "$home/.ssh/authorized_keys"
    chmod 0600 "$home/.ssh/authorized_keys"
}
authorize root "$CONF_DIR/id_root"
authorize "$TEST_USER" "$CONF_DIR/id_$TEST_USER"
# useradd leaves the password locked ("!"), and sshd without PAM refuses locked accounts:
# "*" means "no password" without the lock (key-only logins still work, passwords never do).
if [[ $(getent shadow "$TEST_USER" | cut -d: -f2) == '!'* ]]; then
    usermod -p '*' "$TEST_USER"
    log "user $TEST_USER: unlocked for key logins (no password)"
fi

# known_hosts: ssh reads the one in the passwd home, whatever $HOME says.
install -d -m 0700 /root/.ssh
touch /root/.ssh/known_hosts
entry="[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$CONF_DIR/host_ed25519.pub")"
if ! grep -qxF "$entry" /root/.ssh/known_hosts; then
    ssh-keygen -q -R "[127.0.0.1]:$PORT" -f /root/.ssh/known_hosts >/dev/null 2>&1 || true
    echo "$entry" >>/root/.ssh/known_hosts
    chmod 0600 /root/.ssh/known_hosts
    log "known_hosts: added [127.0.0.1]:$PORT"
fi

# ------------------------------------------------------------------ config --
want="# Written by oci-executor scripts/setup-sshd.sh: the remote-engine tests' sshd.
Port $PORT
ListenAddress 127.0.0.1
HostKey $CONF_DIR/host_ed25519
PidFile $PIDFILE
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers root $TEST_USER
UsePAM no
AllowStreamLocalForwarding yes
AllowTcpForwarding yes
ClientAliveInterval 10
ClientAliveCountMax 3
MaxSessions 50
MaxStartups 50:30:100
LogLevel INFO"
changed=0
if [[ ! -f $CONFIG || "$(cat "$CONFIG")" != "$want" ]]; then
    printf '%s\n' "$want" >"$CONFIG"
    changed=1
fi
/usr/sbin/sshd -t -f "$CONFIG" || die "sshd rejects $CONFIG"

# ------------------------------------------------------------------- start --
running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
if running && ((changed)); then
    kill -TERM "$(cat "$PIDFILE")"
    for _ in $(seq 40); do running || break; sleep 0.25; done
fi
if running; then
    log "sshd: already running on 127.0.0.1:$PORT"
else
    mkdir -p "$STATE_DIR"
    /usr/sbin/sshd -f "$CONFIG" -E "$LOG"   # daemonizes, writes $PIDFILE
    for _ in $(seq 40); do running && break; sleep 0.25; done
    running || { tail -n 20 "$LOG" >&2; die "sshd did not start (log $LOG)"; }
    log "sshd: started on 127.0.0.1:$PORT (log $LOG)"
fi

# ------------------------------------------------------------------ verify --
check() {  # check USER: a non-interactive login works
    local out
    out=$(ssh -o BatchMode=yes -o IdentitiesOnly=yes -i "$CONF_DIR/id_$1" -p "$PORT" "$1@127.0.0.1" id -un 2>&1) \
        && [[ $out == "$1" ]] || die "ssh login as $1 failed: $out"
    printf '  ok    ssh %s@127.0.0.1:%s\n' "$1" "$PORT"
}
check root
check "$TEST_USER"
