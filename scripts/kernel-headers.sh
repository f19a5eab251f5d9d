# Kernel headers for BCC and the tracing filesystems: one search order for a
# host (scripts/install.sh) and for the agent's container
# (scripts/agent-entrypoint.sh). Sourced, not run; the caller defines log().
#
# BCC compiles our BPF programs against kernel headers. The programs use only
# UAPI types, helpers and tracepoint formats, so headers of a nearby version
# work (docs/kernel-headers.md). The search order:
#   1. the running kernel's own headers, $MODULES_DIR/<release>/build;
#   2. the kernel's built-in archive, /sys/kernel/kheaders.tar.xz (BCC unpacks it);
#   3. Debian's nearest headers package: linked into /lib/modules on a host,
#      or bundled as one folder in the agent image and named by BCC_KERNEL_SOURCE.

# Overridable for tests; BCC itself always looks in /lib/modules.
: "${MODULES_DIR:=/lib/modules}"
: "${KERNEL_RELEASE:=$(uname -r)}"
: "${KHEADERS_FILE:=/sys/kernel/kheaders.tar.xz}"
: "${MODPROBE:=modprobe}"
: "${DEBIAN_ARCH:=$(dpkg --print-architecture 2>/dev/null || echo amd64)}"

# 1.
own_kernel_headers() {
    local build="$MODULES_DIR/$KERNEL_RELEASE/build"
    [ -e "$build/include" ] || return 1
    log "kernel headers: $build ($(readlink -f "$build"))"
}

# 2.
kheaders_archive() {
    if [ -e "$KHEADERS_FILE" ] || "$MODPROBE" kheaders 2>/dev/null; then
        log "kernel headers: $KHEADERS_FILE (BCC unpacks it itself)"
        return 0
    fi
    return 1
}

# 3. Debian splits its headers in two folders: linux-headers-<v>-<arch> (the
# generated files and .config) and linux-headers-<v>-common (the rest,
# kconfig.h included). Prints the first; the newest version under $1.
newest_debian_headers() {
    ls -d "$1"/linux-headers-*-"$DEBIAN_ARCH" 2>/dev/null | sort -V | tail -n 1
}

# 3, on a host: BCC finds the two halves as build/ and source/.
link_debian_headers() {
    local arch common build="$MODULES_DIR/$KERNEL_RELEASE/build"
    arch="$(newest_debian_headers /usr/src)"
    common="${arch%-"$DEBIAN_ARCH"}-common"
    if [ -z "$arch" ] || [ ! -d "$common" ]; then
        log "kernel headers: linux-headers-$DEBIAN_ARCH did not provide /usr/src/linux-headers-*"
        return 1
    fi
    mkdir -p "$MODULES_DIR/$KERNEL_RELEASE"
    ln -sfn "$arch" "$build"
    ln -sfn "$common" "$MODULES_DIR/$KERNEL_RELEASE/source"
    log "kernel headers: $(basename "$arch") linked as $build (running kernel $KERNEL_RELEASE has none)"
}

# 3, building the agent image: both halves merged into $1/<version>. BCC
# takes a single folder from BCC_KERNEL_SOURCE (the -<arch> half alone fails),
# and in the container /lib/modules and /usr/src are the host's, read-only.
bundle_debian_headers() {
    local dest="$1" arch common version generated kernel_arch
    arch="$(newest_debian_headers /usr/src)"
    common="${arch%-"$DEBIAN_ARCH"}-common"
    [ -n "$arch" ] && [ -d "$common" ] || { log "no Debian headers in /usr/src"; return 1; }
    version="$(basename "${arch%-"$DEBIAN_ARCH"}")"
    version="${version#linux-headers-}"
    mkdir -p "$dest/$version"
    cp -a "$common/." "$dest/$version/"
    cp -a "$arch/." "$dest/$version/"
    # Headers of the other architectures are most of arch/ and never used.
    generated="$(find "$dest/$version/arch" -path '*/include/generated' -print -quit)"
    kernel_arch="${generated#"$dest/$version/arch/"}"
    kernel_arch="${kernel_arch%%/*}"
    find "$dest/$version/arch" -mindepth 1 -maxdepth 1 ! -name "$kernel_arch" -exec rm -rf {} +
    rm -f "$dest/$version/scripts" "$dest/$version/tools"
    log "kernel headers: Debian's $version bundled in $dest/$version"
}

# 3, in the agent's container: the bundle made above.
use_bundled_headers() {
    local bundled
    bundled="$(ls -d "$1"/*/ 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$bundled" ] && [ -e "$bundled/include" ] || return 1
    export BCC_KERNEL_SOURCE="${bundled%/}"
    log "kernel headers: bundled $(basename "$bundled") (running kernel $KERNEL_RELEASE has none)"
}

# BCC reads tracepoint ids from tracefs: /sys/kernel/debug/tracing first.
tracing_filesystems() {
    if [ -e /sys/kernel/debug/tracing/events ] || [ -e /sys/kernel/tracing/events ]; then
        return 0
    fi
    if [ -z "$(ls -A /sys/kernel/debug 2>/dev/null)" ]; then
        mount -t debugfs none /sys/kernel/debug 2>/dev/null || log "could not mount debugfs"
    fi
    if [ -d /sys/kernel/tracing ] && [ -z "$(ls -A /sys/kernel/tracing 2>/dev/null)" ]; then
        mount -t tracefs none /sys/kernel/tracing 2>/dev/null || log "could not mount tracefs"
    fi
}
