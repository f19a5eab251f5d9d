"""The `podflame` command line: flags come from the settings models and read PODFLAME_*."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from podflame.agent.settings import AgentSettings
from podflame.cli import agent_url, build_parser, settings_from
from podflame.server.settings import ServerSettings
from tests.conftest import PODFLAME


def agent_settings(*argv: str) -> AgentSettings:
    return settings_from(AgentSettings, build_parser().parse_args(["agent", *argv]))


def test_flags_set_agent_settings() -> None:
    settings = agent_settings(
        "--frequency", "99", "--interval", "2.5", "--no-kernel-stacks", "--server", "http://h:1"
    )
    assert settings.frequency == 99
    assert settings.interval == 2.5
    assert settings.kernel_stacks is False
    assert str(settings.server) == "http://h:1/"


def test_environment_fills_in_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODFLAME_FREQUENCY", "49")
    monkeypatch.setenv("PODFLAME_NODE_NAME", "node-7")
    monkeypatch.setenv("PODFLAME_KERNEL_STACKS", "false")
    assert agent_settings().frequency == 49
    assert agent_settings().node_name == "node-7"
    assert agent_settings().kernel_stacks is False
    assert agent_settings("--frequency", "97").frequency == 97
    assert agent_settings("--kernel-stacks").kernel_stacks is True


def test_defaults() -> None:
    agent = agent_settings()
    server = settings_from(ServerSettings, build_parser().parse_args(["server"]))
    assert (agent.frequency, agent.interval, agent.kernel_stacks) == (19, 10.0, True)
    assert (server.port, server.storage) == (8420, "chdb://./data/chdb")


def test_up_takes_both_sets_of_flags() -> None:
    args = build_parser().parse_args(["up", "--port", "9000", "--frequency", "99"])
    assert settings_from(ServerSettings, args).port == 9000
    assert settings_from(AgentSettings, args).frequency == 99
    assert str(agent_url("0.0.0.0", 9000)) == "http://127.0.0.1:9000/"


def test_every_settings_field_is_a_flag() -> None:
    for command, model in (("agent", AgentSettings), ("server", ServerSettings)):
        output = subprocess.run(
            [*PODFLAME, command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for name in model.model_fields:
            assert "--" + name.replace("_", "-") in output
            assert "PODFLAME_" + name.upper() in output


def test_invalid_setting_exits_with_a_message() -> None:
    result = subprocess.run(
        [*PODFLAME, "agent", "--frequency", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "frequency" in result.stderr


def test_kubernetes_flags(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    settings = agent_settings(
        "--no-kubernetes", "--kubeconfig", str(kubeconfig), "--pod-labels", "app,team.io/owner"
    )
    assert settings.kubernetes is False
    assert settings.kubeconfig == kubeconfig
    assert settings.pod_label_map() == {"app": "app", "team.io/owner": "team_io_owner"}
    assert agent_settings("--kubernetes").kubernetes is True
    defaults = agent_settings()
    assert (defaults.kubernetes, defaults.kubeconfig) == (True, None)
    assert list(defaults.pod_label_map().values()) == [
        "app_kubernetes_io_name",
        "app_kubernetes_io_version",
        "app",
        "version",
    ]


@pytest.mark.parametrize(
    ("flag", "value", "complaint"),
    [
        ("--pod-labels", "app,not a key", "not a Kubernetes label key"),
        ("--kubeconfig", "/nonexistent/kubeconfig", "kubeconfig"),
    ],
)
def test_bad_kubernetes_flags_exit_with_the_reason(flag: str, value: str, complaint: str) -> None:
    result = subprocess.run(
        [*PODFLAME, "agent", flag, value], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid setting" in result.stderr and complaint in result.stderr


def test_spool_flags(tmp_path: Path) -> None:
    assert agent_settings().spool_dir is None, "in memory unless asked"
    settings = agent_settings(
        "--spool-dir", str(tmp_path), "--spool-max-bytes", "2000000", "--shutdown-timeout", "2"
    )
    assert (settings.spool_dir, settings.spool_max_bytes) == (tmp_path, 2_000_000)
    assert settings.shutdown_timeout == 2.0
    result = subprocess.run(
        [*PODFLAME, "agent", "--spool-max-bytes", "1000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "spool_max_bytes" in result.stderr


def test_network_tracing_is_on_by_default_and_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert agent_settings().network is True
    assert agent_settings("--no-network").network is False
    monkeypatch.setenv("PODFLAME_NETWORK", "false")
    assert agent_settings().network is False
    assert agent_settings("--network").network is True


@pytest.mark.bpf
@pytest.mark.usefixtures("require_bpf")
def test_sigterm_while_the_bpf_programs_compile_stops_the_agent_cleanly() -> None:
    # Nothing listens on port 9: the agent's last batch is dropped, counted and logged.
    command = [*PODFLAME, "agent", "--server", "http://127.0.0.1:9", "--metrics-port", "0"]
    agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1)  # well inside the compile of the CPU and network programs
    agent.send_signal(signal.SIGTERM)
    _, stderr = agent.communicate(timeout=120)
    assert agent.returncode == 0, stderr[-2000:]
    assert "received SIGTERM, stopping" in stderr
