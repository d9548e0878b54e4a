"""``imrs-bot``: the command line.

    imrs-bot run [--webhook]   serve the bot (long polling, or the webhook server on $PORT)
    imrs-bot start             the bot when TELEGRAM_BOT_TOKEN is set, else the sandbox
    imrs-bot sandbox           try the bot in the terminal, against a local Bot API emulator
    imrs-bot migrate           bring the database schema up to date
    imrs-bot admin add ID      make a Telegram user an administrator (audited)
    imrs-bot keys init         write a new encryption keyring file (mode 0600)
    imrs-bot keys add          add a new key-encryption key to the keyring and make it active
    imrs-bot keys rotate       add a key, then re-wrap every client's data key under it
    imrs-bot keys retire ID    remove a key no data key is wrapped under any more
    imrs-bot content check     check content/: complete, valid Telegram HTML, no memory imagery
    imrs-bot safety check TEXT the safety route of a message (risk, boundary, none) and its rule
    imrs-bot keygen [-o FILE]  make a therapist's age key pair on this computer (no bot needed)
    imrs-bot decrypt FILE --identity KEY [-o OUT]   open an age-encrypted file (e.g. a summary)
    imrs-bot reader [-o FILE]  write the therapist's reader: one offline page to make a key and read summaries

A configuration problem ends with one line saying what to do and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.content import ContentError
from bot.errors import OperatorError
from bot.logs import configure_logging

if TYPE_CHECKING:
    from bot.config import Settings

# python-telegram-bot, SQLAlchemy and pydantic are imported by the commands that use them, not
# here: `content check`, `safety check`, `keygen`, `decrypt` and `reader` start in a fraction of
# the time (a therapist runs the last three on their own computer; CI runs the first often).

EXIT_CONFIG = 2


def _serve(coro_factory: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run until SIGINT/SIGTERM, then let the coroutine shut down cleanly."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await coro_factory(stop)

    asyncio.run(main())


# -- commands ----------------------------------------------------------------------------------


def asyncio_only() -> None:
    """Before the bot's imports: the bot runs on asyncio, and trio is no dependency of it.
    httpcore (under python-telegram-bot's HTTP client) imports trio whenever it is installed
    (the development tools bring it, through selenium) only to learn which of the two it runs
    under: 0.1-0.2 s of every start. Marked absent, httpcore's probe fails at once, as in a
    production install. Nothing else changes; a process that has imported trio keeps it."""
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]


def keep_imports_out_of_gc() -> None:
    """After the bot's imports: move everything alive (modules, classes, the mapped models:
    most of the process's objects, and alive as long as it is) out of the cyclic garbage
    collector's reach (``gc.freeze``). Otherwise each full collection walks all of them
    again: a pause of 0.1-0.2 s in whatever runs then, e.g. a tick that planned 10,000
    reminders (bench/reminders_scale.py). The few garbage cycles the imports may have left
    stay for the life of the process."""
    import gc

    gc.freeze()


def cmd_run(args: argparse.Namespace, settings: Settings) -> None:
    asyncio_only()
    from bot.runtime import run_bot

    keep_imports_out_of_gc()

    settings.require_token()
    configure_logging(settings.log_level, token=settings.token)
    _serve(lambda stop: run_bot(settings, webhook=args.webhook, stop=stop))


def cmd_start(args: argparse.Namespace, settings: Settings) -> None:
    if settings.token:
        args.webhook = False
        cmd_run(args, settings)
    else:
        print("No TELEGRAM_BOT_TOKEN configured: opening the sandbox instead.\n", file=sys.stderr)
        cmd_sandbox(args, settings)


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> None:
    from bot.sandbox.session import SANDBOX_DIR, run_sandbox

    configure_logging(settings.log_level, file=SANDBOX_DIR / "bot.log")
    try:
        asyncio.run(run_sandbox(settings, fresh=getattr(args, "fresh", False)))
    except KeyboardInterrupt:
        pass


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    from bot.crypto.keystore import resolve_keystore_url
    from bot.db.engine import check_database, create_engine, safe_url
    from bot.db.migrate import current_revision, upgrade

    configure_logging(settings.log_level)
    keystore = resolve_keystore_url(settings.database_url, settings.imrs_keystore_url)

    async def migrate() -> None:
        engine = create_engine(settings.database_url)
        try:
            await check_database(engine)
        finally:
            await engine.dispose()
        before = await current_revision(settings.database_url)
        # The key store too, so that a bot running with a role that cannot create tables
        # finds it ready.
        await upgrade(settings.database_url, keystore_url=keystore.url)
        after = await current_revision(settings.database_url)
        where = safe_url(settings.database_url)
        if before == after:
            print(f"{where}: already up to date (revision {after}).")
        else:
            print(f"{where}: migrated from {before or 'an empty database'} to revision {after}.")

    asyncio.run(migrate())


def cmd_keys_init(args: argparse.Namespace, settings: Settings) -> None:
    from bot.crypto.keyring import generate_keyring, write_keyring

    keyring = generate_keyring()
    if args.stdout:
        print(keyring.to_json())
        return
    path = Path(args.file)
    write_keyring(path, keyring)
    print(
        f"Wrote a new keyring to {path} (mode 0600, active key {keyring.active}).\n"
        f"Set IMRS_KEYS_FILE={path} and keep a backup somewhere safe: without it the data cannot be read."
    )


def cmd_keys_add(args: argparse.Namespace, settings: Settings) -> None:
    from bot.crypto.rotation import add_key

    from bot.services.audit import record_operator_action

    source, key_id = add_key(settings)
    asyncio.run(record_operator_action(settings.database_url, "keys.added", {"kek_id": key_id}))
    if source.path is None:
        print(source.keyring.to_json())
        print(
            f"Added key {key_id} (active). The keyring comes from IMRS_KEYS: put the JSON above "
            "into IMRS_KEYS, restart the bot, then run `imrs-bot keys rotate --resume`.",
            file=sys.stderr,
        )
        return
    print(
        f"Added key {key_id} to {source.path} and made it active: new data keys are wrapped "
        "under it. Run `imrs-bot keys rotate --resume` to re-wrap the existing ones, and back "
        "the keyring up."
    )


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> None:
    from bot.crypto.rotation import rotate_keys

    from bot.services.audit import record_operator_action

    configure_logging(settings.log_level)

    async def rotate() -> tuple[str | None, Any]:
        added, result = await rotate_keys(settings, resume=args.resume, batch_size=args.batch_size)
        await record_operator_action(
            settings.database_url,
            "keys.rotated",
            {"kek_id": result.kek_id, "added": added, "rewrapped": result.rewrapped,
             "complete": result.complete},
        )
        return added, result

    added, result = asyncio.run(rotate())
    if added:
        print(f"Added key {added} to the keyring and made it active (back the keyring up).")
    print(
        f"Re-wrapped {result.rewrapped} data key(s) under {result.kek_id} in "
        f"{result.batches} batch(es)."
    )
    if not result.complete:
        raise OperatorError(
            f"{result.remaining} data key(s) are not under {result.kek_id} yet (locked by "
            "another rotation, or created meanwhile): run `imrs-bot keys rotate --resume` again."
        )
    print("Every data key is wrapped under the active key: older keys can now be retired.")


def cmd_keys_retire(args: argparse.Namespace, settings: Settings) -> None:
    from bot.crypto.rotation import retire_key

    from bot.services.audit import record_operator_action

    configure_logging(settings.log_level)
    source = asyncio.run(retire_key(settings, args.kek_id))
    asyncio.run(record_operator_action(settings.database_url, "keys.retired", {"kek_id": args.kek_id}))
    if source.path is None:
        print(source.keyring.to_json())
        print(
            f"Removed key {args.kek_id}: put the JSON above into IMRS_KEYS. Key store backups "
            "made before the rotation need the old keyring.",
            file=sys.stderr,
        )
        return
    print(
        f"Removed key {args.kek_id} from {source.path}. Key store backups made before the "
        "rotation can only be read with a backup of the old keyring."
    )


def cmd_audit(args: argparse.Namespace, settings: Settings) -> None:
    """Recent audit events, newest first: ids, roles and action codes (never clinical text)."""
    from bot.db.engine import create_engine, session_factory
    from bot.db.repositories import AuditRepository

    configure_logging(settings.log_level)

    async def show() -> None:
        engine = create_engine(settings.database_url)
        try:
            async with session_factory(engine)() as session:
                events = await AuditRepository(session).recent(
                    limit=args.limit, actor=args.actor, action=args.action, subject=args.subject
                )
        finally:
            await engine.dispose()
        if not events:
            print("No audit events match.")
        for event in events:
            actor = f"{event.actor_role or 'system'}:{event.actor_telegram_id or '-'}"
            subject = f"person {event.subject_person_id}" if event.subject_person_id else "-"
            detail = json.dumps(event.detail, sort_keys=True) if event.detail else ""
            print(f"{event.occurred_at:%Y-%m-%d %H:%M:%S}Z  {actor:<24} {event.action:<24} {subject:<28} {detail}")

    asyncio.run(show())


def cmd_content_check(args: argparse.Namespace, settings: Settings | None) -> None:
    """Exit 0 with a summary when content/ is clean, else 1 after one line per problem."""
    from bot.content_check import check_content

    report = check_content(Path(args.root))
    for warning in report.warnings:
        print(f"warning: {warning}")
    for problem in report.problems:
        print(problem)
    print(report.summary())
    if not report.ok:
        raise SystemExit(1)


def cmd_safety_check(args: argparse.Namespace, settings: Settings | None) -> None:
    """The safety detector's route for one text, or (--jsonl) for each line of standard input.

    Needs nothing but content/: no token, database or keyring. Exit 0 whatever the route.
    """
    from bot.safety import SafetyDetector

    detector = SafetyDetector.from_content(Path(args.root))
    if args.jsonl:
        for line in sys.stdin:
            verdict = detector.classify(line.rstrip("\r\n"), language=args.language)
            print(json.dumps(verdict.as_dict(), ensure_ascii=False), flush=False)
        sys.stdout.flush()
        return
    verdict = detector.classify(args.text, language=args.language)
    if args.json:
        print(json.dumps(verdict.as_dict(), ensure_ascii=False))
    elif verdict.rule:
        print(f"{verdict.route}: rule {verdict.rule} ({verdict.language})")
    else:
        print(f"{verdict.route} ({verdict.language})")


def cmd_admin_add(args: argparse.Namespace, settings: Settings) -> None:
    """Make a Telegram user an administrator (created if unknown); audited as the operator."""
    from bot.db.models import Role
    from bot.db.repositories import AuditRepository, PeopleRepository
    from bot.runtime import open_services

    configure_logging(settings.log_level)
    telegram_id: int = args.telegram_id

    async def add() -> str:
        services = await open_services(settings)
        try:
            async with services.sessions.begin() as session:
                people = PeopleRepository(session)
                before = await people.get_by_telegram_id(telegram_id)
                if before is not None and before.role in (Role.CLIENT, Role.THERAPIST):
                    # Their clinical role would be lost: an administrator needs its own account.
                    raise OperatorError(
                        f"Telegram user {telegram_id} is registered as a {before.role.value}; "
                        "an administrator needs a Telegram account of its own."
                    )
                if before is not None and before.role is Role.ADMIN and before.active:
                    return f"Telegram user {telegram_id} is already an administrator."
                person = await people.ensure_admin(
                    telegram_id, settings.default_language, settings.default_timezone
                )
                await AuditRepository(session).record(
                    actor_telegram_id=None,
                    actor_role="operator",
                    action="admin.added",
                    subject_person_id=person.id,
                    detail={"previous_role": before.role.value if before else None},
                )
            return f"Telegram user {telegram_id} is now an administrator (their menu updates at their next /start)."
        finally:
            await services.close()

    print(asyncio.run(add()))


def cmd_keygen(args: argparse.Namespace, settings: Settings | None) -> None:
    """A therapist's key pair, in age-keygen's file format; only the public key goes to the bot."""
    from bot.crypto.age import generate, write_private

    pair = generate()
    if args.output is None:
        sys.stdout.write(pair.identity_file)
        sys.stdout.flush()
        print(f"Public key: {pair.recipient}\nFingerprint: {pair.fingerprint}", file=sys.stderr)
        return
    path = Path(args.output)
    try:
        write_private(path, pair.identity_file.encode("ascii"))
    except FileExistsError:
        raise OperatorError(f"{path} exists already: choose another file name (a key is never overwritten).") from None
    except OSError as error:
        raise OperatorError(f"cannot write {path}: {error.strerror or type(error).__name__}.") from None
    print(
        f"Wrote your private key to {path} (mode 0600). Keep it private and backed up: it is the only "
        "way to open what is encrypted to it. Never send it to anyone, not even to the bot.\n"
        f"Public key:  {pair.recipient}\n"
        f"Fingerprint: {pair.fingerprint}\n"
        f"Send the bot:  /setkey {pair.recipient}"
    )


def cmd_decrypt(args: argparse.Namespace, settings: Settings | None) -> None:
    """Open an age file with a key file: to stdout, or to a new file (mode 0600)."""
    from bot.crypto.age import AgeDecryptError, decrypt, write_private

    source, key_file = Path(args.file), Path(args.identity)
    try:
        identities = key_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OperatorError(f"identity file {key_file} not found.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise OperatorError(f"cannot read identity file {key_file} ({type(error).__name__}).") from None
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise OperatorError(f"{source} not found.") from None
    except OSError as error:
        raise OperatorError(f"cannot read {source} ({type(error).__name__}).") from None
    try:
        plaintext = decrypt(data, identities)
    except AgeDecryptError as error:
        where = key_file if error.reason == "identity" else source
        raise OperatorError(f"{where}: {error}.") from None
    if args.output is None:
        sys.stdout.buffer.write(plaintext)
        sys.stdout.flush()
        return
    try:
        write_private(Path(args.output), plaintext)
    except FileExistsError:
        raise OperatorError(f"{args.output} exists already: choose another file name or remove it first.") from None
    except OSError as error:
        raise OperatorError(f"cannot write {args.output}: {error.strerror or type(error).__name__}.") from None
    print(f"Decrypted {source} to {args.output} (mode 0600).", file=sys.stderr)


def cmd_reader(args: argparse.Namespace, settings: Settings | None) -> None:
    """The therapist's reader page (bot/reader), in a language: to stdout, or to a file."""
    from bot.content import Content
    from bot.reader import reader_page

    page = reader_page(Content(), args.language)
    if args.output is None:
        sys.stdout.buffer.write(page)
        sys.stdout.flush()
        return
    try:
        Path(args.output).write_bytes(page)
    except OSError as error:
        raise OperatorError(f"cannot write {args.output}: {error.strerror or type(error).__name__}.") from None
    print(f"Wrote the reader to {args.output}: open it in a browser (it works offline).", file=sys.stderr)


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imrs-bot",
        description="imrs-companion: a Telegram companion for clients between Imagery Rescripting sessions.",
        epilog="Configuration comes from the environment and .env; see README.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="serve the bot (long polling by default)")
    run.add_argument(
        "--webhook",
        action="store_true",
        help="serve the webhook server on $PORT (needs WEBHOOK_URL and WEBHOOK_SECRET)",
    )
    run.set_defaults(func=cmd_run)

    start = sub.add_parser("start", help="the bot if TELEGRAM_BOT_TOKEN is set, else the sandbox (`make run`)")
    start.set_defaults(func=cmd_start)

    sandbox = sub.add_parser("sandbox", help="try the bot in this terminal, without Telegram")
    sandbox.add_argument("--fresh", action="store_true", help="start from an empty sandbox database")
    sandbox.set_defaults(func=cmd_sandbox)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(func=cmd_migrate)

    audit = sub.add_parser("audit", help="print recent audit events (who did what to whose record)")
    audit.add_argument("--limit", type=int, default=50, help="how many events (default: 50)")
    audit.add_argument("--actor", type=int, metavar="TELEGRAM_ID", help="only events by this person")
    audit.add_argument("--subject", type=int, metavar="PERSON_ID", help="only events about this person")
    audit.add_argument("--action", metavar="ACTION", help="only this action, or a family such as 'invite.*'")
    audit.set_defaults(func=cmd_audit)

    admin = sub.add_parser("admin", help="manage the practice's administrators")
    admin_sub = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    admin_add = admin_sub.add_parser("add", help="make a Telegram user an administrator")
    admin_add.add_argument("telegram_id", type=int, metavar="TELEGRAM_ID", help="their numeric Telegram user id")
    admin_add.set_defaults(func=cmd_admin_add)

    keys = sub.add_parser("keys", help="manage the encryption keyring")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    init = keys_sub.add_parser("init", help="write a new keyring file readable only by you")
    init.add_argument("--file", default="keys.json", help="where to write it (default: keys.json)")
    init.add_argument("--stdout", action="store_true", help="print it instead, e.g. for IMRS_KEYS")
    init.set_defaults(func=cmd_keys_init)
    add = keys_sub.add_parser(
        "add", help="add a new key-encryption key and make it active (IMRS_KEYS: print the keyring)"
    )
    add.set_defaults(func=cmd_keys_add)
    rotate = keys_sub.add_parser(
        "rotate", help="add a key, then re-wrap every data key under it (resumable, bot may run)"
    )
    rotate.add_argument(
        "--resume",
        action="store_true",
        help="do not add a key: re-wrap what is not under the active key yet",
    )
    rotate.add_argument(
        "--batch-size", type=int, default=500, help="data keys per transaction (default: 500)"
    )
    rotate.set_defaults(func=cmd_keys_rotate)
    retire = keys_sub.add_parser(
        "retire", help="remove a key from the keyring once no data key is wrapped under it"
    )
    retire.add_argument("kek_id", metavar="KEY_ID", help="the key id, e.g. k20261126-3f9a")
    retire.set_defaults(func=cmd_keys_retire)

    from bot.content import CONTENT_DIR

    content = sub.add_parser("content", help="check the texts in content/")
    content_sub = content.add_subparsers(dest="content_command", metavar="ACTION", required=True)
    check = content_sub.add_parser(
        "check", help="schema, every language complete, Telegram HTML and limits, links, memory-imagery lint"
    )
    check.add_argument("--root", default=str(CONTENT_DIR), help="the content folder (default: content/)")
    check.set_defaults(func=cmd_content_check, needs_settings=False)

    safety = sub.add_parser("safety", help="try the safety detector (content/safety_rules.*.yaml)")
    safety_sub = safety.add_subparsers(dest="safety_command", metavar="ACTION", required=True)
    safety_check = safety_sub.add_parser(
        "check", help="print the route (risk, boundary, none) of a text and the rule that matched",
        description="Print the safety route of TEXT and the rule that matched; exit 0 whatever the route.",
    )
    safety_check.add_argument("text", nargs="?", metavar="TEXT", help="the message to check")
    safety_check.add_argument("--json", action="store_true",
                              help='print one object {"route": ..., "rule": ..., "language": ...}')
    safety_check.add_argument("--jsonl", action="store_true",
                              help="read one text per line from standard input; print one JSON object per line")
    safety_check.add_argument("--language", choices=["en", "nl"],
                              help="a hint: the language tried first, and reported when no rule matches")
    safety_check.add_argument("--root", default=str(CONTENT_DIR), help="the content folder (default: content/)")
    safety_check.set_defaults(func=cmd_safety_check, needs_settings=False,
                              validate=lambda args: _validate_safety_check(safety_check, args))
    keygen = sub.add_parser(
        "keygen", help="make an age key pair for a therapist (age-keygen's format; no bot or database needed)"
    )
    keygen.add_argument("-o", "--output", metavar="FILE", help="write the private key here (mode 0600; never overwritten); default: print it")
    keygen.set_defaults(func=cmd_keygen, needs_settings=False)

    decrypt = sub.add_parser("decrypt", help="decrypt an age file (e.g. a summary) with your key file")
    decrypt.add_argument("file", metavar="FILE", help="the encrypted file (.age)")
    decrypt.add_argument("-i", "--identity", required=True, metavar="KEY", help="your key file (from imrs-bot keygen or age-keygen)")
    decrypt.add_argument("-o", "--output", metavar="OUT", help="write the decrypted file here (mode 0600); default: standard output")
    decrypt.set_defaults(func=cmd_decrypt, needs_settings=False)

    reader = sub.add_parser("reader", help="write the therapist's reader: an offline page that makes a key and opens summaries")
    reader.add_argument("-o", "--output", metavar="FILE", help="write the page here (e.g. imrs-reader.html); default: standard output")
    reader.add_argument("--language", choices=("en", "nl"), default="en", help="the page's language (default: en)")
    reader.set_defaults(func=cmd_reader, needs_settings=False)

    return parser


def _validate_safety_check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.jsonl and args.text is not None:
        parser.error("give TEXT or --jsonl (texts on standard input), not both")
    if not args.jsonl and args.text is None:
        parser.error("give the TEXT to check, or --jsonl to read texts from standard input")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "validate", None) is not None:
        args.validate(args)
    try:
        # keygen, decrypt, reader and the content and safety checks need no configuration at all.
        settings = _load_settings() if getattr(args, "needs_settings", True) else None
        args.func(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _operator_message(exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _load_settings() -> Settings:
    from bot.config import load_settings

    return load_settings()


def _operator_message(exc: Exception) -> str | None:
    """One line for an error the operator can act on (exit status 2), or None for a bug.

    The data layer's and python-telegram-bot's errors are looked up among the modules already
    imported: an exception of theirs means they are (and a command that never needed them
    does not pay for importing them)."""
    data_layer = sys.modules.get("bot.db.errors")
    if isinstance(exc, OperatorError | ContentError) or (
        data_layer is not None and isinstance(exc, data_layer.DataLayerError)
    ):
        return f"imrs-bot: {exc}"
    telegram_errors = sys.modules.get("telegram.error")
    if telegram_errors is not None and isinstance(exc, telegram_errors.InvalidToken):
        return (
            "imrs-bot: the Bot API server rejected TELEGRAM_BOT_TOKEN: check it with @BotFather "
            "(and TELEGRAM_API_BASE_URL if you use your own Bot API server)."
        )
    if telegram_errors is not None and isinstance(exc, telegram_errors.NetworkError):
        return (
            f"imrs-bot: cannot reach the Bot API server ({type(exc).__name__}): check the network "
            "and TELEGRAM_API_BASE_URL."
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
