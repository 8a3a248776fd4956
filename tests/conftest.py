"""Fixtures shared by every test suite: real clients, a reference registry and PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `support` lives next to this file; keep it importable even if tests/ becomes a package.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

pytest_plugins = ["support.appfixtures"]

from support.clients import Podman, Skopeo  # noqa: E402
from support.postgres import PostgresServer, postgres_server  # noqa: E402
from support.servers import DockerRegistry, docker_registry_server  # noqa: E402


@pytest.fixture
def skopeo(tmp_path: Path) -> Skopeo:
    """A skopeo with its own auth file and temp dir for this test only."""
    return Skopeo(tmp_path / "skopeo")


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    """A podman with its own storage, so tests never see each other's images."""
    with Podman(tmp_path / "podman") as client:
        yield client


@pytest.fixture
def docker_registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    """Debian's docker-registry (distribution 2.8), no auth, fresh storage per test."""
    with docker_registry_server(tmp_path / "docker-registry") as registry:
        yield registry


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session; tests create their own databases."""
    with postgres_server() as server:
        yield server
