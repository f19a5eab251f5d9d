"""The `podflame` command: `server`, `agent`, and `up` (both on this host).

Flags are generated from the settings models, so every flag also reads the
environment variable PODFLAME_<FLAG> and the two can never disagree.
"""

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

if TYPE_CHECKING:
    from podflame.agent.agent import Agent
    from podflame.agent.settings import AgentSettings

S = TypeVar("S", bound=BaseSettings)
T = TypeVar("T")


def add_settings_flags(
    parser: argparse.ArgumentParser, model: type[BaseSettings], *, skip: Sequence[str] = ()
) -> None:
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        env = "PODFLAME_" + name.upper()
        default = "" if info.default_factory else f", default {info.default}"
        help_text = f"{info.description} (env {env}{default})"
        if info.annotation is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=help_text)


def settings_from(model: type[S], args: argparse.Namespace) -> S:
    """Flags given on the command line override PODFLAME_* variables, which override defaults."""
    given = {k: v for k, v in vars(args).items() if k in model.model_fields}
    return model(**given)


def build_parser() -> argparse.ArgumentParser:
    from podflame.agent.settings import AgentSettings
    from podflame.server.settings import ServerSettings

    parser = argparse.ArgumentParser(prog="podflame", description=__doc__)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("PODFLAME_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (env PODFLAME_LOG_LEVEL, default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server", help="Run the server (ingest, storage, API, UI).")
    add_settings_flags(server, ServerSettings)
    agent = commands.add_parser("agent", help="Run the node agent (needs root).")
    add_settings_flags(agent, AgentSettings)
    up = commands.add_parser("up", help="Run the server and an agent profiling this host.")
    add_settings_flags(up, ServerSettings)
    add_settings_flags(up, AgentSettings, skip=["server"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except ValidationError as error:
        parser.exit(2, f"podflame: invalid setting:\n{error}\n")


def run_server(args: argparse.Namespace) -> int:
    from podflame.server.main import serve
    from podflame.server.settings import ServerSettings

    serve(settings_from(ServerSettings, args))
    return 0


def run_agent(args: argparse.Namespace) -> int:
    from podflame.agent.agent import build_agent
    from podflame.agent.settings import AgentSettings

    settings = settings_from(AgentSettings, args)
    # Before the BPF programs compile (seconds): a SIGTERM meanwhile still stops cleanly.
    stop = stop_on_signals()
    agent = start_agent(build_agent, settings)
    with serving_metrics(settings, agent):
        agent.run(stop)
    return 0


def run_up(args: argparse.Namespace) -> int:
    """Server in a thread, agent in another; on a signal the agent ships its last batch first."""
    from podflame.agent.agent import build_agent
    from podflame.agent.settings import AgentSettings
    from podflame.server.main import build_server
    from podflame.server.settings import ServerSettings

    server_settings = settings_from(ServerSettings, args)
    agent_settings = settings_from(AgentSettings, args)
    agent_settings.server = agent_url(
        server_settings.host, server_settings.port, tls=server_settings.tls
    )
    stop = stop_on_signals()  # before the BPF programs compile, as in run_agent
    agent = start_agent(build_agent, agent_settings)
    server = build_server(server_settings)
    server_thread = threading.Thread(target=server.run, name="server")
    server_thread.start()
    agent_thread = threading.Thread(target=agent.run, args=(stop,), name="agent")
    agent_thread.start()
    print(f"podflame is up: {agent_settings.server}", flush=True)
    with serving_metrics(agent_settings, agent):
        while not stop.wait(0.5):
            if not server_thread.is_alive() or not agent_thread.is_alive():
                stop.set()
        agent_thread.join()
    server.should_exit = True
    server_thread.join()
    return 0


def start_agent(build: Callable[[S], T], settings: S) -> T:
    """Load the BPF programs, or exit with a message that says what is missing."""
    try:
        return build(settings)
    except Exception as error:
        logging.getLogger("podflame").debug("agent start failed", exc_info=True)
        sys.exit(
            f"podflame: cannot start the agent: {error}\n"
            "The agent needs root, BPF and BCC with kernel headers: run `make run` "
            "(scripts/install.sh) or see docs/kernel-headers.md."
        )


@contextmanager
def serving_metrics(settings: "AgentSettings", agent: "Agent") -> Iterator[None]:
    """The agent's /metrics while the block runs; --metrics-port 0 turns it off."""
    from podflame.agent.metrics import MetricsServer

    if not settings.metrics_port:
        yield
        return
    try:
        server = MetricsServer(settings.metrics_host, settings.metrics_port, agent.registry)
    except OSError as error:
        sys.exit(
            f"podflame: cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: "
            f"{error} (choose another --metrics-port, or 0 to turn it off)"
        )
    server.start()
    try:
        yield
    finally:
        server.close()


def agent_url(host: str, port: int, *, tls: bool = False) -> Any:
    """Where `up`'s agent finds its server; with TLS the certificate must name this host
    (127.0.0.1 for a server on all addresses) and --ca-file trust its issuer."""
    from pydantic import AnyHttpUrl

    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return AnyHttpUrl(f"{'https' if tls else 'http'}://{reachable}:{port}")


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        logging.getLogger("podflame").info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


COMMANDS = {"server": run_server, "agent": run_agent, "up": run_up}

if __name__ == "__main__":
    sys.exit(main())
