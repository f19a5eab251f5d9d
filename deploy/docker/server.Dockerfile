# The server: API, UI and embedded chDB (or a ClickHouse server, see docs/deploy.md).
#   docker build -f deploy/docker/server.Dockerfile -t podflame-server .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY podflame podflame
COPY model model
COPY bpf bpf
COPY symbolizer symbolizer
COPY profiler-agent profiler-agent
COPY server server
COPY ui ui
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/podflame-*.whl)[server]" && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/podflame --create-home podflame
USER 10001
WORKDIR /var/lib/podflame
# Listen on every address of the pod; store in the volume mounted at /var/lib/podflame.
ENV PODFLAME_HOST=0.0.0.0 \
    PODFLAME_STORAGE=chdb:///var/lib/podflame/chdb \
    PYTHONUNBUFFERED=1
EXPOSE 8420
ENTRYPOINT ["podflame"]
CMD ["server"]
