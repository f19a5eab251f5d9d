#!/usr/bin/env bash
# Installs what podflame needs on this host; safe to run again (each step
# checks before it acts). Used by `make run` and `make test`.
#
#   scripts/install.sh run          agent + server
#   scripts/install.sh dev          agent + server + test and lint tools, Chromium
#   scripts/install.sh agent-image  the agent's container image (deploy/docker/agent.Dockerfile):
#                                   agent only, installed (not editable) into $PODFLAME_VENV,
#                                   Debian's headers bundled; headers are chosen at start
#                                   by scripts/agent-entrypoint.sh
set -euo pipefail

profile="${1:-run}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${PODFLAME_VENV:-$root/.venv}"
bundled_headers="${PODFLAME_BUNDLED_HEADERS:-/opt/podflame/kernel-headers}"

log() { printf 'install: %s\n' "$*"; }

# shellcheck source=scripts/kernel-headers.sh
. "$root/scripts/kernel-headers.sh"

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
    if [ "$profile" = agent-image ]; then
        # xz-utils: BCC unpacks /sys/kernel/kheaders.tar.xz with tar.
        apt_install python3-bpfcc python3-venv xz-utils "linux-headers-$DEBIAN_ARCH"
        return 0
    fi
    apt_install bpfcc-tools python3-bpfcc python3-venv make gcc libc6-dev
    if [ "$profile" = dev ]; then
        # The browser tests, and the accuracy tests' reference profiler and
        # workloads in C++, Go, Node.js and Rust; bpftool reads the kernel's
        # BPF run-time statistics for the network benchmark.
        apt_install chromium linux-perf g++ golang-go nodejs bpftool
        # The security tests: a test CA (openssl), capability dropping (setpriv,
        # capsh), ELF tools to build hostile binaries (binutils).
        apt_install openssl util-linux libcap2-bin binutils
        command -v rustc >/dev/null || apt_install rustc
    fi
}

# See scripts/kernel-headers.sh for the order and why.
kernel_headers() {
    if own_kernel_headers || kheaders_archive; then
        return 0
    fi
    if ! command -v apt-get >/dev/null; then
        log "kernel headers: none found for $KERNEL_RELEASE; BPF programs will not compile"
        return 1
    fi
    apt_install "linux-headers-$DEBIAN_ARCH"
    link_debian_headers
}

virtualenv() {
    local python="${PODFLAME_PYTHON:-python3}"
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv with $($python --version)"
        "$python" -m venv "$venv"
    fi
    local extras="agent,server" editable="-e"
    [ "$profile" = dev ] && extras="all"
    [ "$profile" = agent-image ] && extras="agent" editable=""
    local stamp="$venv/.podflame-$extras"
    if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
        log "pip install $editable .[$extras]"
        "$venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir --upgrade pip
        # shellcheck disable=SC2086 # $editable is one flag or none
        "$venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir $editable \
            "$root[$extras]"
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
if [ "$profile" = agent-image ]; then
    bundle_debian_headers "$bundled_headers"
else
    kernel_headers
    tracing_filesystems
fi
virtualenv
bcc_module
