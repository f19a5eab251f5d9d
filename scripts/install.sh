#!/usr/bin/env bash
# Installs what podflame needs on this host; safe to run again (each step
# checks before it acts). Used by `make run` and `make test`.
#
#   scripts/install.sh run    agent + server
#   scripts/install.sh dev    agent + server + test and lint tools, Chromium
set -euo pipefail

profile="${1:-run}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"

log() { printf 'install: %s\n' "$*"; }

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

apt_install() {
    local missing=()
    for pkg in "$@"; do have_pkg "$pkg" || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    if [ -z "${_apt_updated:-}" ]; then
        apt-get update -qq
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

debian_packages() {
    if ! command -v apt-get >/dev/null; then
        log "no apt-get: install BCC's python3-bpfcc and python3-venv by hand"
        return 0
    fi
    apt_install bpfcc-tools python3-bpfcc python3-venv make gcc libc6-dev
    if [ "$profile" = dev ]; then
        # The browser tests, and the accuracy tests' reference profiler and
        # workloads in C++, Go, Node.js and Rust; bpftool reads the kernel's
        # BPF run-time statistics for the network benchmark.
        apt_install chromium linux-perf g++ golang-go nodejs bpftool
        command -v rustc >/dev/null || apt_install rustc
    fi
}

# BCC compiles BPF programs against kernel headers. Our programs use only UAPI
# types, helpers and tracepoint formats, so headers of a nearby version work.
kernel_headers() {
    local release build
    release="$(uname -r)"
    build="/lib/modules/$release/build"
    if [ -e "$build/include" ]; then
        log "kernel headers: $build ($(readlink -f "$build"))"
        return 0
    fi
    if [ -e /sys/kernel/kheaders.tar.xz ] || modprobe kheaders 2>/dev/null; then
        log "kernel headers: /sys/kernel/kheaders.tar.xz (BCC unpacks it itself)"
        return 0
    fi
    if ! command -v apt-get >/dev/null; then
        log "kernel headers: none found for $release; BPF programs will not compile"
        return 1
    fi
    apt_install linux-headers-amd64
    local arch common
    arch="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)"
    common="${arch%-amd64}-common"
    if [ -z "$arch" ] || [ ! -d "$common" ]; then
        log "kernel headers: linux-headers-amd64 did not provide /usr/src/linux-headers-*-amd64"
        return 1
    fi
    mkdir -p "/lib/modules/$release"
    ln -sfn "$arch" "$build"
    # kconfig.h and friends live in -common, which BCC reaches through source/.
    ln -sfn "$common" "/lib/modules/$release/source"
    log "kernel headers: $(basename "$arch") linked as $build (running kernel $release has none)"
}

tracing_filesystems() {
    if [ -z "$(ls -A /sys/kernel/debug 2>/dev/null)" ]; then
        mount -t debugfs none /sys/kernel/debug 2>/dev/null || log "could not mount debugfs"
    fi
    if [ -d /sys/kernel/tracing ] && [ -z "$(ls -A /sys/kernel/tracing 2>/dev/null)" ]; then
        mount -t tracefs none /sys/kernel/tracing 2>/dev/null || log "could not mount tracefs"
    fi
}

virtualenv() {
    local python="${PODFLAME_PYTHON:-python3}"
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv with $($python --version)"
        "$python" -m venv "$venv"
    fi
    local extras="agent,server"
    [ "$profile" = dev ] && extras="all"
    local stamp="$venv/.podflame-$extras"
    if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
        log "pip install -e .[$extras]"
        "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
        "$venv/bin/pip" install -q --disable-pip-version-check -e "$root[$extras]"
        touch "$stamp"
    fi
}

# Exactly Debian's bcc module, not the rest of Debian's dist-packages.
bcc_module() {
    local site dist=/usr/lib/python3/dist-packages/bcc
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    if [ ! -d "$dist" ]; then
        log "bcc: $dist missing (python3-bpfcc not installed?)"
        return 1
    fi
    ln -sfn "$dist" "$site/bcc"
    "$venv/bin/python" -c 'import bcc' && log "bcc: $dist linked into the virtualenv"
}

debian_packages
kernel_headers
tracing_filesystems
virtualenv
bcc_module
