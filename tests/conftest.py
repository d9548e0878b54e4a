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
