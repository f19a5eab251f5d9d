from pathlib import Path

import pytest

from tests.deploy.install import Build, builder, prepare


@pytest.fixture(scope="session")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendering copy of deploy/kubernetes, its tokens and certificates made."""
    return prepare(tmp_path_factory.mktemp("install") / "kubernetes")


@pytest.fixture(scope="session")
def build(install: Path) -> Build:
    return builder(install)
