# The node agent: Debian's BCC, Debian's kernel headers bundled as a fallback,
# and an entrypoint that picks headers at start as scripts/install.sh does.
#   docker build -f deploy/docker/agent.Dockerfile -t podflame-agent .
# Runs as root with the capabilities of deploy/kubernetes/base/agent-daemonset.yaml.
FROM debian:bookworm-slim

ENV PODFLAME_VENV=/opt/podflame/venv \
    PODFLAME_BUNDLED_HEADERS=/opt/podflame/kernel-headers \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ENV PATH=/opt/podflame/venv/bin:$PATH

WORKDIR /opt/podflame/src
COPY pyproject.toml README.md ./
COPY podflame podflame
COPY model model
COPY bpf bpf
COPY symbolizer symbolizer
COPY profiler-agent profiler-agent
COPY server server
COPY ui ui
COPY scripts/install.sh scripts/kernel-headers.sh scripts/

# The installer's agent-image profile: Debian packages, Debian's headers
# merged into one folder, the agent in a virtualenv with Debian's bcc module.
# Then the headers package itself goes: its files are in the bundle now. In
# the pod, /usr/src is the node's, reached through the node's /usr mounted at
# /host/usr (deploy/kubernetes/base/agent-daemonset.yaml says why).
RUN apt-get update \
    && bash scripts/install.sh agent-image \
    && apt-get purge -y --auto-remove 'linux-headers-*' 'linux-kbuild-*' \
    && rm -rf /var/lib/apt/lists/* /opt/podflame/src /usr/src \
    && ln -s /host/usr/src /usr/src

WORKDIR /opt/podflame
COPY scripts/agent-entrypoint.sh scripts/kernel-headers.sh /opt/podflame/bin/

# /metrics on every address of the container's network namespace, as a
# setting rather than an argument, so that a pod can narrow it: the DaemonSet
# gives the pod's own address. (An argument here would beat its variable.)
ENV PODFLAME_METRICS_HOST=0.0.0.0
ENTRYPOINT ["/opt/podflame/bin/agent-entrypoint.sh"]
# Arguments go to `podflame agent`; every flag can also be a PODFLAME_* variable.
CMD []
