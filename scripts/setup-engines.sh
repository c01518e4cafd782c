#!/usr/bin/env bash
# Prepare real container engines for oci-executor's tests on a Debian 12 machine
# (run as root; PID 1 need not be systemd; no container registry needed).
#
#   * Docker Engine (docker.io)           unix:///var/run/docker.sock
#   * rootful Podman REST service         unix:///run/podman/podman.sock
#   * rootless Podman REST service of the unprivileged user "ocitest"
#                                         unix:///run/user/<uid>/podman/podman.sock
#   * an OpenSSH server on 127.0.0.1:22422 for the remote-engine tests (scripts/setup-sshd.sh)
#   * test images built locally with debootstrap and loaded into all three stores:
#       oci-executor-test/python:3.11    Debian bookworm minbase + python3 (3.11)
#       oci-executor-test/python:3.9     Debian bullseye minbase + python3 (3.9)
#       oci-executor-test/nopython:latest Debian bookworm minbase, no Python
#     and, best effort (warnings only): oci-executor-test/python:3.10 and :3.12
#     (bookworm minbase + the host's pyenv interpreters).
#   * a local image registry at 127.0.0.1:5000 (Debian's docker-registry, plain HTTP, marked
#     insecure for Podman) holding 127.0.0.1:5000/oci-executor-test/pull-probe:latest, which no
#     store holds, for the pull tests.
#
#   * a throwaway Slurm cluster (scripts/setup-slurm.sh, run at the end): munge, slurmctld and
#     two slurmd nodes on this host; jobs run as "ocitest" with its rootless Podman
#
# Idempotent: a second run only checks that everything answers (a few seconds).
# Stop the services again with scripts/stop-engines.sh.
#
# Environment overrides:
#   OCI_TEST_USER (ocitest)   OCI_TEST_CACHE (/var/cache/oci-executor-test)
#   OCI_TEST_MIRROR (the Debian mirror apt uses)   OCI_TEST_SKIP_EXTRA=1 (skip 3.10/3.12)
#   OCI_TEST_IMAGE_PREFIX (oci-executor-test; for testing this script without touching
#   the real images)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

TEST_USER="${OCI_TEST_USER:-ocitest}"
CACHE_DIR="${OCI_TEST_CACHE:-/var/cache/oci-executor-test}"
STATE_DIR=/run/oci-executor           # pid files of the services started here
DOCKER_SOCK=/var/run/docker.sock
DOCKER_LOG=/var/log/oci-executor-dockerd.log
PODMAN_SOCK=/run/podman/podman.sock
PODMAN_LOG=/var/log/oci-executor-podman.log
ROOTLESS_LOG=/var/log/oci-executor-podman-rootless.log
REGISTRY=127.0.0.1:5000
REGISTRY_LOG=/var/log/oci-executor-registry.log
REGISTRY_DIR=/var/lib/oci-executor-registry
PULL_PROBE=$REGISTRY/oci-executor-test/pull-probe:latest
IMAGE_PREFIX="${OCI_TEST_IMAGE_PREFIX:-oci-executor-test}"
WAIT_SECS=60
IMAGE_PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PACKAGES=(
    docker.io containerd runc tini
    podman conmon catatonit containernetworking-plugins golang-github-containers-common
    uidmap slirp4netns fuse-overlayfs iptables
    debootstrap debian-archive-keyring curl ca-certificates docker-registry
    chromium fonts-dejavu-core  # headless browser for the timeline report's test (tests/test_observe.py)
)

T0=$(date +%s)
log()  { printf '[setup-engines %3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
warn() { printf '[setup-engines] WARNING: %s\n' "$*" >&2; }
die()  { printf '[setup-engines] ERROR: %s\n' "$*" >&2; exit 1; }

[[ ${EUID} -eq 0 ]] || die "must run as root"

# ---------------------------------------------------------------- packages --
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] \
            || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "packages: all installed"
        return
    fi
    log "packages: installing ${missing[*]}"
    # Keep the packages' init scripts from starting daemons: this script starts them.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    local rc=0
    {
        apt-get update -qq &&
        apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}"
    } >/var/log/oci-executor-apt.log 2>&1 || rc=$?
    ((created_policy)) && rm -f "$policy"
    ((rc == 0)) || { tail -n 30 /var/log/oci-executor-apt.log >&2; die "apt-get failed (see /var/log/oci-executor-apt.log)"; }
    log "packages: done"
}

# ------------------------------------------------------ containers.conf fix --
write_containers_conf() {
    # Podman's default ulimits exceed this machine's hard limits (no CAP_SYS_RESOURCE),
    # and crun refuses the hybrid cgroup layout: both break every container start.
    local f=/etc/containers/containers.conf want
    want='# Written by oci-executor scripts/setup-engines.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
'
    mkdir -p /etc/containers
    if [[ -f $f ]] && [[ "$(cat "$f")"$'\n' == "$want" ]]; then
        log "containers.conf: up to date"
        return
    fi
    [[ -f $f && ! -f $f.orig ]] && cp -p "$f" "$f.orig"
    printf '%s' "$want" >"$f"
    log "containers.conf: written"
}

write_registries_conf() {
    # The test registry speaks plain HTTP; Docker allows that for 127.0.0.0/8, Podman only
    # for registries marked insecure. A running Podman service keeps the configuration it
    # started with: restart the services this script started when the file changes.
    local f=/etc/containers/registries.conf.d/50-oci-executor-test.conf want
    want="# Written by oci-executor scripts/setup-engines.sh: the test registry (plain HTTP)
[[registry]]
location = \"$REGISTRY\"
insecure = true
"
    mkdir -p "$(dirname "$f")"
    if [[ -f $f ]] && [[ "$(cat "$f")"$'\n' == "$want" ]]; then
        log "registries.conf.d: up to date"
        return
    fi
    printf '%s' "$want" >"$f"
    log "registries.conf.d: written; restarting the Podman services this script started"
    # (Rootless Podman re-executes itself in a user namespace: match the command line, not a pid.)
    local pattern="podman system service --time=0 unix://(/run/podman|/run/user/[0-9]+/podman)/podman.sock"
    pkill -TERM -f "$pattern" || true
    for _ in $(seq 40); do pgrep -f "$pattern" >/dev/null || break; sleep 0.25; done
}

# ------------------------------------------------------------------ helpers --
# Start a command fully detached from the caller (own session, stdin /dev/null,
# output to a log file) and record its pid.
start_detached() {
    local pidfile=$1 logfile=$2
    shift 2
    mkdir -p "$STATE_DIR"
    printf '\n==== %s: %s\n' "$(date -Is)" "$*" >>"$logfile"
    # From /: a service must not hold the caller's working folder (conmon, started by the
    # Podman service, fails in a folder that was deleted since: "Failed to get working directory").
    (cd / && exec setsid "$@" </dev/null >>"$logfile" 2>&1) &
    echo $! >"$pidfile"
}

sock_ping() {  # sock_ping SOCKET: the engine behind SOCKET answers /_ping
    [[ -S $1 ]] && curl -sf -m 5 --unix-socket "$1" http://d/_ping >/dev/null 2>&1
}

wait_for() {  # wait_for WHAT LOGFILE PIDFILE CMD...: until CMD succeeds; fail if the pid dies
    local what=$1 logfile=$2 pidfile=$3 i pid
    shift 3
    pid=$(cat "$pidfile")
    for ((i = 0; i < WAIT_SECS * 4; i++)); do
        "$@" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$logfile" >&2 || true
            die "$what exited before answering (log: $logfile)"
        fi
        sleep 0.25
    done
    tail -n 30 "$logfile" >&2 || true
    die "$what did not answer within ${WAIT_SECS}s (log: $logfile)"
}

TEST_UID="" TEST_HOME="" TEST_XDG="" ROOTLESS_SOCK=""
as_user() {  # run a command as the test user, with a clean rootless environment
    setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups \
        env -i HOME="$TEST_HOME" USER="$TEST_USER" LOGNAME="$TEST_USER" SHELL=/bin/bash \
        PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="$TEST_XDG" "$@"
}

# ------------------------------------------------------------------- docker --
start_docker() {
    if sock_ping "$DOCKER_SOCK" && docker info >/dev/null 2>&1; then
        log "docker: already running"
        return
    fi
    log "docker: starting dockerd (log $DOCKER_LOG)"
    start_detached "$STATE_DIR/dockerd.pid" "$DOCKER_LOG" dockerd
    wait_for "dockerd" "$DOCKER_LOG" "$STATE_DIR/dockerd.pid" eval 'sock_ping "$DOCKER_SOCK" && docker info >/dev/null 2>&1'
    log "docker: up"
}

# ----------------------------------------------------------- rootful podman --
start_podman_rootful() {
    if sock_ping "$PODMAN_SOCK"; then
        log "podman (rootful): service already running"
        return
    fi
    mkdir -p "$(dirname "$PODMAN_SOCK")"
    rm -f "$PODMAN_SOCK"
    log "podman (rootful): starting service (log $PODMAN_LOG)"
    start_detached "$STATE_DIR/podman-rootful.pid" "$PODMAN_LOG" \
        podman system service --time=0 "unix://$PODMAN_SOCK"
    wait_for "rootful podman service" "$PODMAN_LOG" "$STATE_DIR/podman-rootful.pid" sock_ping "$PODMAN_SOCK"
    log "podman (rootful): up"
}

# ------------------------------------------------ rootless user and podman --
subid_next_start() {  # first free id above every range in /etc/subuid and /etc/subgid
    awk -F: 'BEGIN { m = 100000 } NF >= 3 && $2 + $3 > m { m = $2 + $3 } END { print m }' \
        /etc/subuid /etc/subgid 2>/dev/null
}

setup_test_user() {
    if ! id -u "$TEST_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash -U "$TEST_USER"
        log "user: created $TEST_USER"
    fi
    TEST_UID=$(id -u "$TEST_USER")
    TEST_HOME=$(getent passwd "$TEST_USER" | cut -d: -f6)
    TEST_XDG=/run/user/$TEST_UID
    ROOTLESS_SOCK=$TEST_XDG/podman/podman.sock

    touch /etc/subuid /etc/subgid
    local f start
    for f in /etc/subuid /etc/subgid; do
        if ! grep -q "^${TEST_USER}:" "$f" && ! grep -q "^${TEST_UID}:" "$f"; then
            start=$(subid_next_start)
            echo "${TEST_USER}:${start}:65536" >>"$f"
            log "user: added $f range ${start}-$((start + 65535))"
        fi
    done

    # No docker group, no sudo: the rootless tests must not be able to reach root.
    if id -nG "$TEST_USER" | tr ' ' '\n' | grep -qxE 'docker|sudo|wheel|admin'; then
        local g
        for g in docker sudo wheel admin; do
            id -nG "$TEST_USER" | tr ' ' '\n' | grep -qx "$g" && gpasswd -d "$TEST_USER" "$g" >/dev/null
        done
        log "user: removed $TEST_USER from privileged groups"
    fi

    install -d -m 0700 -o "$TEST_USER" -g "$TEST_USER" "$TEST_XDG" "$TEST_XDG/podman"
    install -d -m 0755 -o "$TEST_USER" -g "$TEST_USER" \
        "$TEST_HOME/.config" "$TEST_HOME/.config/containers"
    local conf=$TEST_HOME/.config/containers/storage.conf
    local want=$'[storage]\ndriver = "overlay"'
    if [[ ! -f $conf || "$(cat "$conf")" != "$want" ]]; then
        printf '%s\n' "$want" >"$conf"
        chown "$TEST_USER:$TEST_USER" "$conf"
        log "user: wrote $conf"
    fi

    # slirp4netns (rootless networking) needs a usable /dev/net/tun.
    if [[ ! -c /dev/net/tun ]]; then
        mkdir -p /dev/net
        mknod /dev/net/tun c 10 200
    fi
    chmod 666 /dev/net/tun
}

start_podman_rootless() {
    if sock_ping "$ROOTLESS_SOCK"; then
        log "podman (rootless, $TEST_USER): service already running"
    else
        rm -f "$ROOTLESS_SOCK"
        log "podman (rootless, $TEST_USER): starting service (log $ROOTLESS_LOG)"
        # The service is started before any other rootless podman command so that the
        # user-namespace pause process is born detached, too.
        start_detached "$STATE_DIR/podman-rootless.pid" "$ROOTLESS_LOG" \
            setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups \
            env -i HOME="$TEST_HOME" USER="$TEST_USER" LOGNAME="$TEST_USER" \
            PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="$TEST_XDG" \
            podman system service --time=0 "unix://$ROOTLESS_SOCK"
        wait_for "rootless podman service" "$ROOTLESS_LOG" "$STATE_DIR/podman-rootless.pid" sock_ping "$ROOTLESS_SOCK"
        log "podman (rootless, $TEST_USER): up"
    fi
    local driver
    driver=$(as_user podman info --format '{{.Store.GraphDriverName}}' </dev/null 2>/dev/null) || true
    [[ $driver == overlay ]] \
        || die "rootless podman of $TEST_USER uses storage driver '${driver:-?}', not overlay (try: as $TEST_USER, 'podman system reset')"
}

# ----------------------------------------------------------------- registry --
start_registry() {
    if curl -sf -m 5 "http://$REGISTRY/v2/" >/dev/null 2>&1; then
        log "registry: already running at $REGISTRY"
    else
        mkdir -p "$REGISTRY_DIR" /etc/oci-executor
        printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n' \
            "$REGISTRY_DIR" "$REGISTRY" >/etc/oci-executor/registry.yml
        log "registry: starting at $REGISTRY (log $REGISTRY_LOG)"
        start_detached "$STATE_DIR/registry.pid" "$REGISTRY_LOG" docker-registry serve /etc/oci-executor/registry.yml
        wait_for "registry" "$REGISTRY_LOG" "$STATE_DIR/registry.pid" curl -sf -m 5 "http://$REGISTRY/v2/" -o /dev/null
    fi
    if curl -sf -m 5 "http://$REGISTRY/v2/oci-executor-test/pull-probe/manifests/latest" \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' -o /dev/null; then
        log "registry: $PULL_PROBE present"
        return
    fi
    # The test image plus a layer of 20 MB of random bytes that no store holds.
    local dir
    dir=$(mktemp -d)
    head -c 20000000 /dev/urandom >"$dir/blob"
    printf 'FROM %s/python:3.11\nCOPY blob /blob\n' "$IMAGE_PREFIX" >"$dir/Dockerfile"
    docker build -q -t "$PULL_PROBE" "$dir" >/dev/null 2>>"$REGISTRY_LOG" || die "could not build $PULL_PROBE (log: $REGISTRY_LOG)"
    docker push -q "$PULL_PROBE" >/dev/null
    docker rmi "$PULL_PROBE" >/dev/null
    rm -rf "$dir"
    log "registry: pushed $PULL_PROBE"
}

# ------------------------------------------------------------------- images --
debian_mirror() {
    if [[ -n ${OCI_TEST_MIRROR:-} ]]; then
        echo "$OCI_TEST_MIRROR"
        return
    fi
    local m=""
    # deb822 sources first (Debian 12 default), then one-line sources.
    m=$(awk '
        /^[[:space:]]*#/ { next }
        /^URIs:/   { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") ok = 1 }
        /^[[:space:]]*$/ { if (ok && uri != "") { print uri; exit } ; uri = ""; ok = 0 }
        END { if (ok && uri != "") print uri }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1) || true
    if [[ -z $m ]]; then
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' |
            head -n1) || true
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# rootfs_tar NAME SUITE INCLUDE: cache a debootstrap minbase rootfs as $CACHE_DIR/NAME.tar
rootfs_tar() {
    local name=$1 suite=$2 include=$3 tar=$CACHE_DIR/$1.tar
    if [[ -s $tar ]]; then
        echo "$tar"
        return
    fi
    local dir
    dir=$(mktemp -d "$CACHE_DIR/rootfs-$name.XXXXXX")
    log "image rootfs: debootstrap $suite${include:+ (+$include)} from $MIRROR" >&2
    if ! debootstrap --variant=minbase ${include:+--include="$include"} \
        "$suite" "$dir" "$MIRROR" >"$CACHE_DIR/$name.debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE_DIR/$name.debootstrap.log" >&2
        rm -rf "$dir"
        die "debootstrap $suite failed (log: $CACHE_DIR/$name.debootstrap.log)"
    fi
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log \
        "$dir"/debootstrap
    # /dev, /proc, /sys contents are provided by the engine (rootless cannot mknod anyway).
    tar --numeric-owner -C "$dir" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
        -cf "$tar.tmp" .
    rm -rf "$dir"
    chmod 0644 "$tar.tmp"
    mv "$tar.tmp" "$tar"
    echo "$tar"
}

IMPORT_CHANGES=(--change 'CMD ["/bin/sh"]' --change "ENV $IMAGE_PATH_ENV" --change 'ENV LANG=C.UTF-8')

# load_image IMAGE TAR: import TAR as IMAGE into every store that lacks it (in parallel)
load_image() {
    local image=$1 tar=$2 pids=() pid rc=0
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        (docker import "${IMPORT_CHANGES[@]}" "$tar" "$image" >/dev/null &&
            log "image $image: imported into docker") &
        pids+=($!)
    fi
    if ! podman image exists "$image"; then
        (podman import -q "${IMPORT_CHANGES[@]}" "$tar" "$image" >/dev/null &&
            log "image $image: imported into rootful podman") &
        pids+=($!)
    fi
    # The tarball is world-readable (0644 in a 0755 folder), so the user reads it in place.
    if ! as_user podman image exists "$image" </dev/null; then
        (as_user podman import -q "${IMPORT_CHANGES[@]}" "$tar" "$image" </dev/null >/dev/null &&
            log "image $image: imported into rootless podman ($TEST_USER)") &
        pids+=($!)
    fi
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || rc=1; done
    ((rc == 0)) || die "importing $image from $tar failed"
}

image_in_all_stores() {
    docker image inspect "$1" >/dev/null 2>&1 && podman image exists "$1" &&
        as_user podman image exists "$1" </dev/null
}

# image tag, cached rootfs name, Debian suite, debootstrap --include ("-": none)
REQUIRED_IMAGES=(
    "python:3.11 bookworm-minbase-python3 bookworm python3"
    "python:3.9 bullseye-minbase-python3 bullseye python3"
    "nopython:latest bookworm-minbase bookworm -"
)
PYLIBS=libssl3,libffi8,zlib1g,libbz2-1.0,liblzma5,libsqlite3-0,libreadline8,libncursesw6,libuuid1,libnsl2,libtirpc3,libexpat1,libcrypt1
EXTRA_IMAGES=(3.10 3.12)

extras_wanted() { [[ ${OCI_TEST_SKIP_EXTRA:-0} != 1 ]]; }

build_images() {
    install -d -m 0755 "$CACHE_DIR"
    MIRROR=$(debian_mirror)
    local spec image name suite include tar todo=() prefetch=() pids=() pid minor
    for spec in "${REQUIRED_IMAGES[@]}"; do
        read -r image name suite include <<<"$spec"
        if image_in_all_stores "$IMAGE_PREFIX/$image"; then
            log "image $IMAGE_PREFIX/$image: present in all stores"
        else
            todo+=("$spec")
            [[ -s $CACHE_DIR/$name.tar ]] || prefetch+=("$name $suite $include")
        fi
    done
    if extras_wanted && [[ ! -s $CACHE_DIR/bookworm-minbase-pylibs.tar ]]; then
        for minor in "${EXTRA_IMAGES[@]}"; do
            if ! image_in_all_stores "$IMAGE_PREFIX/python:$minor"; then
                prefetch+=("bookworm-minbase-pylibs bookworm $PYLIBS")
                break
            fi
        done
    fi
    # debootstrap is mostly waiting on the network: build the missing root filesystems in
    # parallel. Best effort; the pass below retries (and reports) any that failed.
    if ((${#prefetch[@]})); then
        for spec in "${prefetch[@]}"; do
            read -r name suite include <<<"$spec"
            [[ $include == - ]] && include=""
            (rootfs_tar "$name" "$suite" "$include" >/dev/null) &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "$pid" || true; done
        log "image rootfs: debootstrap done"
    fi
    for spec in ${todo[@]+"${todo[@]}"}; do
        read -r image name suite include <<<"$spec"
        [[ $include == - ]] && include=""
        tar=$(rootfs_tar "$name" "$suite" "$include")
        load_image "$IMAGE_PREFIX/$image" "$tar"
    done
}

# Best effort: bookworm minbase + the host's pyenv interpreter for 3.10 / 3.12.
build_pyenv_image() {
    local minor=$1 image=$IMAGE_PREFIX/python:$1 src base tar dir
    if image_in_all_stores "$image"; then
        log "image $image: present in all stores"
        return 0
    fi
    src=$(ls -d /root/.pyenv/versions/"$minor".* 2>/dev/null | sort -V | tail -n1) || true
    [[ -n $src && -x $src/bin/python$minor ]] || { warn "no pyenv Python $minor on this host: skipping $image"; return 1; }
    tar=$CACHE_DIR/bookworm-pyenv-$(basename "$src").tar
    if [[ ! -s $tar ]]; then
        base=$(rootfs_tar bookworm-minbase-pylibs bookworm "$PYLIBS") || return 1
        dir=$(mktemp -d "$CACHE_DIR/rootfs-pyenv.XXXXXX")
        tar -C "$dir" -xf "$base"
        mkdir -p "$dir$(dirname "$src")"
        chmod 0755 "$dir/root"   # let a non-root container user reach the interpreter
        tar -C / --exclude="lib/python$minor/test" --exclude='lib/python*/idlelib' \
            --exclude='lib/python*/tkinter' --exclude='lib/python*/lib-dynload/_tkinter*' \
            --exclude='__pycache__' -cf - "${src#/}" | tar -C "$dir" -xf -
        ln -sf "$src/bin/python$minor" "$dir/usr/local/bin/python3"
        ln -sf "$src/bin/python$minor" "$dir/usr/local/bin/python$minor"
        tar --numeric-owner -C "$dir" -cf "$tar.tmp" . && chmod 0644 "$tar.tmp" && mv "$tar.tmp" "$tar"
        rm -rf "$dir"
    fi
    load_image "$image" "$tar" || return 1
    local out
    out=$(docker run --rm "$image" python3 -c 'import ssl, json, zlib, sqlite3, ctypes, bz2, lzma, readline; print(1)' 2>&1) \
        && [[ $out == 1 ]] || { warn "$image does not work: $out"; return 1; }
}

build_extra_images() {
    if ! extras_wanted; then
        log "extra images: skipped (OCI_TEST_SKIP_EXTRA=1)"
        return
    fi
    local minor
    for minor in "${EXTRA_IMAGES[@]}"; do
        # Subshell with its own set -e: any failure there only produces a warning.
        local rc=0
        set +e
        (set -e; build_pyenv_image "$minor")
        rc=$?
        set -e
        ((rc == 0)) || warn "optional image $IMAGE_PREFIX/python:$minor not available"
    done
}

# ------------------------------------------------------------------- verify --
FAILURES=()
check() {  # check LABEL EXPECTED-PREFIX CMD...
    local label=$1 expect=$2 out
    shift 2
    if out=$("$@" </dev/null 2>&1) && [[ $out == "$expect"* ]]; then
        printf '  ok    %-58s %s\n' "$label" "$out"
    else
        printf '  FAIL  %-58s %s\n' "$label" "$(tail -n 3 <<<"$out")"
        FAILURES+=("$label")
    fi
}

check_nopython() {  # CMD... : python3 must be absent from the nopython image
    local out
    out=$("$@" "$IMAGE_PREFIX/nopython:latest" sh -c 'command -v python3 || echo none' 2>&1) || return 1
    echo "$out"
}

verify() {
    log "verifying"
    local rootful=(podman --remote --url "unix://$PODMAN_SOCK")
    local rootless=(as_user podman --remote --url "unix://$ROOTLESS_SOCK")
    local tag
    for tag in 3.11 3.9; do
        check "docker           $IMAGE_PREFIX/python:$tag" "Python $tag." \
            docker run --rm "$IMAGE_PREFIX/python:$tag" python3 --version
        check "podman rootful   $IMAGE_PREFIX/python:$tag" "Python $tag." \
            "${rootful[@]}" run --rm "$IMAGE_PREFIX/python:$tag" python3 --version
        check "podman rootless  $IMAGE_PREFIX/python:$tag" "Python $tag." \
            "${rootless[@]}" run --rm "$IMAGE_PREFIX/python:$tag" python3 --version
    done
    check "docker           $IMAGE_PREFIX/nopython:latest" none check_nopython docker run --rm
    check "podman rootful   $IMAGE_PREFIX/nopython:latest" none check_nopython "${rootful[@]}" run --rm
    check "podman rootless  $IMAGE_PREFIX/nopython:latest" none check_nopython "${rootless[@]}" run --rm
    # Rootless networking (slirp4netns) must work, not only --network none.
    check "podman rootless  default network (slirp4netns)" ok \
        "${rootless[@]}" run --rm "$IMAGE_PREFIX/nopython:latest" sh -c "awk 'NR > 2 && \$1 != \"lo:\" { print \"ok\"; exit }' /proc/net/dev"
    # Optional images: reported, never fatal.
    for tag in "${EXTRA_IMAGES[@]}"; do
        docker image inspect "$IMAGE_PREFIX/python:$tag" >/dev/null 2>&1 || continue
        local out
        out=$(docker run --rm "$IMAGE_PREFIX/python:$tag" python3 --version 2>&1) || true
        printf '  %-5s %-58s %s\n' "$([[ $out == "Python $tag."* ]] && echo ok || echo warn)" \
            "docker (optional) $IMAGE_PREFIX/python:$tag" "$out"
    done
}

# --------------------------------------------------------------------- main --
install_packages
write_containers_conf
write_registries_conf
start_docker
start_podman_rootful
setup_test_user
start_podman_rootless
build_images
build_extra_images
start_registry
verify
bash "$(dirname "${BASH_SOURCE[0]}")/setup-sshd.sh" || FAILURES+=("sshd for the remote-engine tests")

echo
echo "Engines (took $(( $(date +%s) - T0 ))s):"
echo "  Docker            DOCKER_HOST=unix://$DOCKER_SOCK"
echo "  Podman (rootful)  unix://$PODMAN_SOCK"
echo "  Podman (rootless) unix://$ROOTLESS_SOCK   (user $TEST_USER, uid $TEST_UID, XDG_RUNTIME_DIR=$TEST_XDG)"
echo "  Registry          http://$REGISTRY (insecure; holds $PULL_PROBE)"
echo "  over ssh          ssh://root@127.0.0.1:${OCI_TEST_SSH_PORT:-22422} and ssh://$TEST_USER@127.0.0.1:${OCI_TEST_SSH_PORT:-22422}$ROOTLESS_SOCK (keys in /etc/oci-executor/ssh)"
echo "Images: $IMAGE_PREFIX/python:3.11 $IMAGE_PREFIX/python:3.9 $IMAGE_PREFIX/nopython:latest (+ optional :3.10 :3.12)"
if ((${#FAILURES[@]})); then
    die "${#FAILURES[@]} check(s) failed: ${FAILURES[*]}"
fi
echo "All required engines and images work."
bash "$(dirname "${BASH_SOURCE[0]}")/setup-slurm.sh"
