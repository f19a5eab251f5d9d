#!/usr/bin/env bash
# The agent container's entrypoint (deploy/docker/agent.Dockerfile): finds
# kernel headers for BCC in the order scripts/install.sh uses on a host, warns
# about kernels that will refuse the agent's capabilities, then runs
# `podflame agent` with the container's arguments.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
log() { printf 'podflame-agent: %s\n' "$*" >&2; }

# shellcheck source=scripts/kernel-headers.sh
. "$here/kernel-headers.sh"

# Below 5.8 there is no CAP_BPF or CAP_PERFMON; Debian and Ubuntu kernels with
# kernel.perf_event_paranoid above 2 open perf events only for CAP_SYS_ADMIN.
check_capabilities() {
    local paranoid capeff major minor
    paranoid="$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 2)"
    capeff="$(awk '/^CapEff:/ {print $2}' /proc/self/status)"
    IFS=. read -r major minor _ <<<"$KERNEL_RELEASE"
    (( (16#$capeff >> 21) & 1 )) && return 0 # CAP_SYS_ADMIN: nothing more to check
    if (( major < 5 || (major == 5 && minor < 8) )); then
        log "kernel $KERNEL_RELEASE predates CAP_BPF and CAP_PERFMON (5.8): BPF needs" \
            "CAP_SYS_ADMIN; deploy with deploy/kubernetes/overlays/sys-admin (docs/deploy.md)"
    elif (( paranoid > 2 )); then
        log "kernel.perf_event_paranoid is $paranoid: Debian and Ubuntu kernels then open" \
            "perf events only for CAP_SYS_ADMIN; deploy with deploy/kubernetes/overlays/sys-admin" \
            "or set it to 2 on the node (docs/deploy.md)"
    fi
}

if ! own_kernel_headers && ! kheaders_archive \
    && ! use_bundled_headers "${PODFLAME_BUNDLED_HEADERS:-/opt/podflame/kernel-headers}"; then
    log "no kernel headers found: mount the node's /lib/modules and /usr/src, or use a kernel" \
        "with CONFIG_IKHEADERS (docs/kernel-headers.md)"
fi
tracing_filesystems
check_capabilities
exec "${PODFLAME_COMMAND:-podflame}" agent "$@"
