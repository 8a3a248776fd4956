"""Fixtures of the secscan tests: the scanner enabled in the settings, and a stub scanner."""

import pytest
from support.secscanstub import StubScanner, install, scanner_config

from quaymaster.secscan import service


@pytest.fixture
def config(config):
    return scanner_config(config)


@pytest.fixture
def scanner(monkeypatch) -> StubScanner:
    yield install(monkeypatch)
    service.clear_cache()
