"""/progress with years of practice: load + aggregate, and rendering the chart.

For each history length (1 and 5 years by default, three practices a day with both ratings,
encrypted as in production) on a temporary, migrated SQLite database with a SQLite key store:

* load + aggregate: ``ProgressService.summary`` (the COUNT, then only the last year's rows,
  decrypted, grouped by local day and week), warm key cache, median of 5;
* render: ``render_chart`` to PNG (1200x900, Agg), median of 3;
* the PNG's size in bytes.

The goal (issue 6) is "well under a second" for both together with five years of data.

Run: ``.venv/bin/python bench/progress_chart.py [years ...]``
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.content import Content  # noqa: E402
from bot.crypto.fields import FieldCrypto  # noqa: E402
from bot.crypto.keyring import generate_keyring  # noqa: E402
from bot.crypto.keystore import KeyStore  # noqa: E402
from bot.db.engine import create_engine, session_factory  # noqa: E402
from bot.db.migrate import upgrade  # noqa: E402
from bot.db.models import Person, ExerciseRun, Role  # noqa: E402
from bot.services.people import Identity  # noqa: E402
from bot.services.progress import ProgressService  # noqa: E402
from bot.services.progress_chart import render_chart  # noqa: E402
from handlers.progress import chart_labels  # noqa: E402

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PER_DAY = (7, 13, 20)  # hours (UTC) of the day's practices
GOAL_MS = 1000.0
T = TypeVar("T")


async def median_ms(runs: int, body: Callable[[], Awaitable[T]]) -> tuple[float, T]:
    samples, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = await body()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), result  # type: ignore[return-value]


async def seed(sessions, client_id: int, years: int) -> int:
    first = NOW - timedelta(days=365 * years)
    rows = 0
    for chunk_start in range(0, 365 * years, 200):
        async with sessions.begin() as session:
            for day in range(chunk_start, min(chunk_start + 200, 365 * years)):
                for hour in PER_DAY:
                    started = first + timedelta(days=day, hours=hour)
                    before = 3 + (day * 7 + hour) % 8
                    session.add(
                        ExerciseRun(
                            client_id=client_id,
                            exercise="breathing",
                            started_at=started,
                            ended_at=started + timedelta(minutes=6),
                            distress_before=str(before),
                            distress_after=str(max(0, before - (day + hour) % 5)),
                        )
                    )
                    rows += 1
    return rows


async def one(tmp: Path, years: int, labels: dict) -> str:
    url = f"sqlite:///{tmp}/clinical-{years}.sqlite3"
    await upgrade(url)
    store = await KeyStore.open(f"sqlite:///{tmp}/keystore-{years}.sqlite3", generate_keyring())
    engine = create_engine(url)
    try:
        sessions = FieldCrypto(store).attach(session_factory(engine))
        async with sessions.begin() as session:
            person = Person(telegram_id=1000 + years, role=Role.CLIENT, language="en", timezone="Europe/Amsterdam")
            session.add(person)
        client = Identity(person.telegram_id, "x", Role.CLIENT, person.id, "en", "Europe/Amsterdam")
        rows = await seed(sessions, person.id, years)
        service = ProgressService(sessions, clock=lambda: NOW)
        await service.summary(client)  # warm-up: key cache, statement cache
        load_ms, progress = await median_ms(5, lambda: service.summary(client))
        render_ms, png = await median_ms(3, lambda: asyncio.to_thread(render_chart, progress, labels))
        total = load_ms + render_ms
        verdict = "ok" if total < GOAL_MS else "OVER GOAL"
        return (
            f"{years:>2} year(s)  rows {rows:>6}  drawn {progress.shown:>5}  "
            f"load+aggregate {load_ms:7.1f} ms  render {render_ms:7.1f} ms  "
            f"total {total:7.1f} ms  PNG {len(png):>7} bytes  ({verdict})"
        )
    finally:
        await engine.dispose()
        await store.close()


async def main(years: list[int]) -> None:
    labels = chart_labels(Content(), "en")
    with tempfile.TemporaryDirectory() as tmp:
        for n in years:
            print(await one(Path(tmp), n, labels), flush=True)


if __name__ == "__main__":
    asyncio.run(main([int(a) for a in sys.argv[1:]] or [1, 5]))
