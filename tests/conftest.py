from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_bot"]


@pytest.fixture(autouse=True, scope="session")
def _one_tls_context_for_all_http_clients() -> Iterator[None]:
    """Every httpx client (python-telegram-bot makes two per bot start, and the tests start
    hundreds of bots) builds an ``ssl.SSLContext`` and loads the CA bundle into it, about half
    the CPU time of starting the bot. The tests only speak plain HTTP to the emulator, and an
    SSLContext may be shared, so they share one per set of arguments. Only an optimisation:
    without httpx's ``create_ssl_context`` where it is looked up today, nothing changes."""
    try:
        from httpx._transports import default as transports
    except ImportError:  # pragma: no cover - another httpx layout
        yield
        return
    create = getattr(transports, "create_ssl_context", None)
    if create is None:  # pragma: no cover
        yield
        return
    made: dict[tuple[Any, ...], Any] = {}

    def shared(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if not isinstance(verify, bool) or cert is not None:
            return create(verify=verify, cert=cert, trust_env=trust_env)
        key = (verify, trust_env)
        if key not in made:
            made[key] = create(verify=verify, cert=cert, trust_env=trust_env)
        return made[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transports, "create_ssl_context", shared)
        yield


@pytest.fixture(autouse=True, scope="session")
def _safety_rules_compiled_once() -> Iterator[None]:
    """Every bot a test starts reads, checks and compiles the same safety rule files (about a
    third of a second each, the largest part of starting a bot). Compiled rule sets are
    read-only apart from their own word caches, so the bots of one test process share them:
    each start still gets a detector of its own over them. Keyed by the files' paths, times and
    sizes, so a test that writes rule files of its own (a copy of content/) compiles those."""
    from pathlib import Path

    from bot.safety.detector import SafetyDetector
    from bot.safety.rules import load_rules, rule_files

    compiled: dict[tuple[Any, ...], Any] = {}

    def from_content(cls: type[SafetyDetector], content_root: Any = None, default_language: str = "en") -> SafetyDetector:
        from bot.content import CONTENT_DIR

        root = Path(content_root if content_root is not None else CONTENT_DIR)
        key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in rule_files(root).values()) or (str(root),)
        if key not in compiled:
            compiled[key] = load_rules(root)  # raises for broken files, as the real one does
        return cls(compiled[key], default_language)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SafetyDetector, "from_content", classmethod(from_content))
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` (real processes, thousands of updates or recipients) go
    first. ``make test`` hands tests to its workers in collection order; a test of a minute
    handed out last keeps one worker busy after the others have finished, with one core idle
    (longest first is the usual cure for that tail). The order within each part is kept."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
