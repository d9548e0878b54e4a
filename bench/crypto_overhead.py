"""Encryption + decryption overhead per check-in.

A check-in is taken to be 8 encrypted fields of 20-500 characters (answers and notes).
Measured:

* warm: the owner's data key is in the process cache (the normal case): 8 seals + 8 opens;
* cold: the cache is empty: fetch the wrapped data key from a SQLite key store, unwrap it
  under the KEK, then 8 seals + 8 opens;
* cold, unwrap only: the same without the key-store query (unwrap + 8 seals + 8 opens);
* ORM: writing and reading back one row with 8 encrypted columns through an AsyncSession
  (warm cache), minus the same with 8 plain text columns, on an in-memory SQLite database.

Run: ``.venv/bin/python bench/crypto_overhead.py [iterations]``
"""

from __future__ import annotations

import asyncio
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column  # noqa: E402
from sqlalchemy.pool import StaticPool  # noqa: E402

from bot.crypto.fields import FieldCrypto, PersonId, encrypted, new_row_id, row_id_column  # noqa: E402
from bot.crypto.keyring import generate_keyring  # noqa: E402
from bot.crypto.keystore import KeyStore, WrappedKey, data_keys  # noqa: E402
from bot.db.engine import create_engine, session_factory  # noqa: E402

FIELDS = 8
GOAL_US = 1000.0
ALPHABET = string.ascii_letters + string.digits + " .,;:!?éüßøЖ中"


class _Base(DeclarativeBase):
    pass


class EncryptedCheckIn(_Base):
    __tablename__ = "bench_encrypted"
    id: Mapped[int] = row_id_column()
    client_id: Mapped[int] = mapped_column(PersonId)
    f0: Mapped[str | None] = encrypted(owner="client_id")
    f1: Mapped[str | None] = encrypted(owner="client_id")
    f2: Mapped[str | None] = encrypted(owner="client_id")
    f3: Mapped[str | None] = encrypted(owner="client_id")
    f4: Mapped[str | None] = encrypted(owner="client_id")
    f5: Mapped[str | None] = encrypted(owner="client_id")
    f6: Mapped[str | None] = encrypted(owner="client_id")
    f7: Mapped[str | None] = encrypted(owner="client_id")


class PlainCheckIn(_Base):
    __tablename__ = "bench_plain"
    id: Mapped[int] = row_id_column()
    client_id: Mapped[int] = mapped_column(PersonId)
    f0: Mapped[str | None] = mapped_column(sa.Text)
    f1: Mapped[str | None] = mapped_column(sa.Text)
    f2: Mapped[str | None] = mapped_column(sa.Text)
    f3: Mapped[str | None] = mapped_column(sa.Text)
    f4: Mapped[str | None] = mapped_column(sa.Text)
    f5: Mapped[str | None] = mapped_column(sa.Text)
    f6: Mapped[str | None] = mapped_column(sa.Text)
    f7: Mapped[str | None] = mapped_column(sa.Text)


def check_in(rng: random.Random) -> list[str]:
    return ["".join(rng.choices(ALPHABET, k=rng.randint(20, 500))) for _ in range(FIELDS)]


def summary(name: str, samples_us: list[float]) -> str:
    samples = sorted(samples_us)
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    mean = statistics.fmean(samples)
    verdict = "ok" if p95 <= GOAL_US else "OVER GOAL"
    return f"{name:<34} mean {mean:8.1f} us   p95 {p95:8.1f} us   ({len(samples)} check-ins, {verdict})"


async def timed(iterations: int, body: Callable[[int], Awaitable[None]]) -> list[float]:
    out: list[float] = []
    for i in range(iterations):
        start = time.perf_counter()
        await body(i)
        out.append((time.perf_counter() - start) * 1e6)
    return out


async def main(iterations: int) -> None:
    rng = random.Random(1)
    payloads = [check_in(rng) for _ in range(64)]
    with tempfile.TemporaryDirectory() as tmp:
        store = await KeyStore.open(f"sqlite:///{tmp}/keystore.sqlite3", generate_keyring())
        crypto = FieldCrypto(store)
        people = [new_row_id() for _ in range(200)]
        await crypto.ensure_writable(people)

        def seal_and_open(i: int) -> None:
            owner, fields = people[i % len(people)], payloads[i % len(payloads)]
            row = new_row_id()
            sealed = [
                crypto.seal(text.encode(), table="check_ins", column=f"f{n}", row_id=row, owner_id=owner)
                for n, text in enumerate(fields)
            ]
            for n, value in enumerate(sealed):
                crypto.open(value, table="check_ins", column=f"f{n}", row_id=row, owner_id=owner).decode()

        async def warm(i: int) -> None:
            seal_and_open(i)

        async def cold(i: int) -> None:
            crypto.clear_cache()
            await crypto.prepare([people[i % len(people)]])
            seal_and_open(i)

        async with store.engine.connect() as connection:
            rows = [
                WrappedKey(r[0], r[1], r[2], bytes(r[3]))
                for r in await connection.execute(
                    sa.select(data_keys.c.person_id, data_keys.c.key_version, data_keys.c.kek_id, data_keys.c.wrapped)
                )
            ]
        by_person = {r.person_id: r for r in rows}

        async def cold_unwrap_only(i: int) -> None:
            crypto.clear_cache()
            row = by_person[people[i % len(people)]]
            crypto._cache.put(row.person_id, {row.key_version: store.unwrap(row)})  # noqa: SLF001
            seal_and_open(i)

        await timed(50, warm)  # warm-up
        results = [
            summary("warm cache", await timed(iterations, warm)),
            summary("cold (key store + unwrap)", await timed(min(iterations, 1000), cold)),
            summary("cold (unwrap only)", await timed(iterations, cold_unwrap_only)),
        ]

        # ORM round trip: encrypted minus plain columns, warm cache, in-memory SQLite.
        engine = create_engine("sqlite://", poolclass=StaticPool)
        async with engine.begin() as connection:
            await connection.run_sync(_Base.metadata.create_all)
        await crypto.ensure_writable(people)
        encrypted_sessions = crypto.attach(session_factory(engine))
        plain_sessions = session_factory(engine)

        def orm_round_trip(model: type, sessions: object) -> Callable[[int], Awaitable[None]]:
            async def body(i: int) -> None:
                fields = payloads[i % len(payloads)]
                values = {f"f{n}": text for n, text in enumerate(fields)}
                async with sessions() as session:  # type: ignore[operator]
                    row = model(client_id=people[i % len(people)], **values)
                    session.add(row)
                    await session.commit()
                    row_id = row.id
                async with sessions() as session:  # type: ignore[operator]
                    loaded = await session.get(model, row_id)
                    assert loaded is not None and loaded.f7 == fields[7]

            return body

        plain_body = orm_round_trip(PlainCheckIn, plain_sessions)
        encrypted_body = orm_round_trip(EncryptedCheckIn, encrypted_sessions)
        await timed(50, plain_body)
        await timed(50, encrypted_body)
        n = min(iterations, 1000)
        plain, enc = [], []
        for _ in range(5):  # interleave to share the machine's noise
            plain += await timed(n // 5, plain_body)
            enc += await timed(n // 5, encrypted_body)
        await engine.dispose()
        await crypto.aclose()

    print(f"Crypto overhead per check-in ({FIELDS} encrypted fields of 20-500 characters, "
          "encrypt + decrypt each once):")
    for line in results:
        print("  " + line)
    plain_mean, enc_mean = statistics.fmean(plain), statistics.fmean(enc)
    p95 = lambda xs: sorted(xs)[int(len(xs) * 0.95)]  # noqa: E731
    print(
        f"  {'ORM write+read, plain columns':<34} mean {plain_mean:8.1f} us   p95 {p95(plain):8.1f} us"
    )
    print(
        f"  {'ORM write+read, encrypted columns':<34} mean {enc_mean:8.1f} us   p95 {p95(enc):8.1f} us"
        f"   (overhead: mean {enc_mean - plain_mean:+.1f} us)"
    )
    print(f"goal: <= {GOAL_US / 1000:g} ms per check-in")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
