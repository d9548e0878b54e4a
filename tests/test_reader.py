"""The therapist's reader (bot/reader, built from reader/) in a real headless browser: Debian's
chromium driven by selenium through chromedriver. A key made in the page is registered with
the bot (/setkey through the emulator), a check-in's summary arrives as a .age document and
opens in the page with the key file the page saved; files made by the stock `age` tool and by
pyrage open too; the wrong key, a non-age file, a damaged file and an unusable key each show
their own text; the page makes no network request. Also: the checked-in page was built from
the sources as they are (`make reader`; no Node needed here), and holds no web address.

Without chromium and chromedriver these tests skip, except under CI=true, where they fail
(.ci/run installs both).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.content import Content
from bot.crypto import age
from bot.reader import PAGE, reader_page

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20.0  # seconds: the longest a step in the page may take on a busy machine


# -- the page as built -------------------------------------------------------------------------


def test_the_checked_in_page_is_built_from_the_sources_as_they_are():
    """`make reader` writes the sources' digest into the page (reader/build.mjs): a change to
    the page, script, style, build or locked packages without a rebuild fails here."""
    sources = ["src/page.html", "src/reader.js", "src/style.css", "build.mjs", "package-lock.json"]
    digest = hashlib.sha256()
    for name in sources:
        digest.update((ROOT / "reader" / name).read_text(encoding="utf-8").replace("\r\n", "\n").encode("utf-8"))
    built = PAGE.read_text(encoding="utf-8")
    assert f"sources sha256:{digest.hexdigest()}" in built, "run `make reader` and commit bot/reader/"
    assert (PAGE.parent / "NOTICE").is_file() and "BSD-3-Clause" in (PAGE.parent / "NOTICE").read_text()
    lock = json.loads((ROOT / "reader" / "package-lock.json").read_text())
    package = json.loads((ROOT / "reader" / "package.json").read_text())
    for name, version in package["devDependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned to one version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version


@pytest.mark.parametrize("language", ["en", "nl"])
def test_the_page_is_one_file_without_web_addresses_or_personal_data(language: str):
    page = reader_page(Content(), language).decode("utf-8")
    assert re.findall(r"https?://", page) == []  # no script, font, style or frame from anywhere
    assert "<script src" not in page and "<link" not in page
    assert "default-src 'none'" in page  # and the browser is told to refuse any request
    assert f'<html lang="{language}">' in page and "__IMRS_" not in page
    texts = Content().raw("reader.page.create.title", language)
    assert texts in page


def test_imrs_bot_reader_writes_the_page_in_the_language_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from bot.cli import main

    assert main(["reader", "-o", str(tmp_path / "imrs-reader.html"), "--language", "nl"]) == 0
    assert (tmp_path / "imrs-reader.html").read_bytes() == reader_page(Content(), "nl")
    assert "imrs-reader.html" in capsys.readouterr().err
    assert main(["reader"]) == 0
    assert capsys.readouterr().out.encode("utf-8") == reader_page(Content(), "en")


# -- the browser -------------------------------------------------------------------------------


def _browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"missing {', '.join(missing)}: CI installs chromium and chromium-driver (.ci/run)")
        pytest.skip(f"missing {', '.join(missing)} (apt-get install chromium chromium-driver)")


class Reader:
    """The page open in headless chromium, with the words it should show."""

    def __init__(self, driver, downloads: Path, language: str) -> None:
        self.driver, self.downloads, self.language = driver, downloads, language
        self.content = Content()

    def text(self, key: str, **params: str) -> str:
        """A page text as the browser shows it (tags dropped)."""
        raw = self.content.text(f"reader.{key}", self.language, **params)
        return re.sub(r"<[^>]+>", "", raw).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    def find(self, element_id: str):
        return self.driver.find_element("id", element_id)

    def wait(self, condition, what: str):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.05).until(lambda _: condition(), message=what)

    def create_key(self) -> tuple[str, str, str]:
        """Press "Create my key"; the recipient and fingerprint shown, and the key file saved."""
        self.find("create-button").click()
        self.wait(lambda: self.find("created").is_displayed(), "the new key is shown")
        recipient = self.find("recipient").text
        saved = self.wait(lambda: [p for p in self.downloads.glob("imrs-key-*.txt")], "the key file is saved")
        return recipient, self.find("fingerprint").text, saved[0].read_text(encoding="ascii")

    def open_summary(self, summary: Path, key_file: Path | None = None, pasted: str | None = None) -> None:
        self.driver.refresh()  # a fresh page: no file chosen before
        self.find("summary-file").send_keys(str(summary))
        if key_file is not None:
            self.find("key-file").send_keys(str(key_file))
        if pasted is not None:
            self.find("key-text").send_keys(pasted)
        self.wait(lambda: self.find("summary-name").text, "the summary is chosen")
        self.find("open-button").click()
        self.wait(lambda: self.find("report-box").is_displayed() or self.find("read-error").is_displayed(),
                  "the summary or an error is shown")

    def report(self) -> str:
        """The text of the summary shown in the sandboxed frame."""
        assert self.find("report-box").is_displayed(), self.find("read-error").text
        frame = self.find("report")
        assert frame.get_attribute("sandbox") == ""  # no script runs in the summary
        self.driver.switch_to.frame(frame)
        try:
            return self.driver.find_element("tag name", "body").text
        finally:
            self.driver.switch_to.default_content()

    def error(self) -> str:
        assert self.find("read-error").is_displayed() and not self.find("report-box").is_displayed()
        return self.find("read-error").text

    def requests(self) -> tuple[list[str], list[str]]:
        """The URLs the browser requested since the last call, from its performance log: those
        it went on to load or try, and those its Content-Security-Policy blocked."""
        sent: dict[str, str] = {}
        blocked: list[str] = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message["params"]
            if message["method"] == "Network.requestWillBeSent":
                sent[params["requestId"]] = params["request"]["url"]
            elif message["method"] == "Network.loadingFailed" and params.get("blockedReason") == "csp":
                blocked.append(sent.pop(params["requestId"], "?"))
        return list(sent.values()), blocked


def open_reader(tmp_path: Path, language: str = "en") -> Iterator[Reader]:
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    page = tmp_path / "imrs-reader.html"
    page.write_bytes(reader_page(Content(), language))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-background-networking", "--disable-extensions",
                     "--disable-component-update", "--disable-sync", "--disable-default-apps",
                     "--disable-features=IsolateSandboxedIframes"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.get(page.as_uri())
        reader = Reader(driver, downloads, language)
        reader.wait(lambda: reader.find("create-button").text, "the page's words are filled in")
        yield reader
    finally:
        driver.quit()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    yield from open_reader(tmp_path)


@pytest.fixture
def pair() -> age.KeyPair:
    return age.generate()


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


async def test_a_key_made_in_the_page_receives_a_check_in_summary_that_opens_in_the_page(
    bot, emulator, reader: Reader, tmp_path: Path
):
    from bot.db.models import Role
    from tests.join_support import add_person, open_chat, says
    from tests.test_summaries import NOTE, complete_check_in, linked_client

    recipient, fingerprint, _ = reader.create_key()
    therapist = await add_person(bot, 8401, Role.THERAPIST, display_name="Dr. Jansen")
    chat = await open_chat(emulator.user(8401, first_name="Jan"))
    await chat.send(reader.find("setkey-command").text)  # copied from the page, as the page says
    assert says(await chat.next_message(), "setkey.set", fingerprint=fingerprint)

    client_id = await linked_client(bot, therapist, 8402, alias="K7")
    await complete_check_in(bot, client_id, therapist.person_id)
    document = await chat.wait_for(lambda m: m.document is not None)
    assert fingerprint in document.caption
    summary = _write(tmp_path, document.document.file_name, document.document.data)

    key_file = next(reader.downloads.glob("imrs-key-*.txt"))  # the file the page saved
    reader.open_summary(summary, key_file=key_file)
    page = reader.report()
    assert "Readiness summary: K7" in page
    for answer in ("8 of 10", "very poorly", "1 of 7", "a little", "partly", NOTE):
        assert answer in page, answer


SAMPLE = "<!doctype html><html><body><h1>Readiness summary: K9</h1><p>Distress 6 of 10 (Capybara-55)</p><script>document.body.append('SCRIPT RAN')</script></body></html>"


def test_a_key_made_in_the_page_has_the_bots_fingerprint_and_opens_what_pyrage_encrypts(reader: Reader, tmp_path: Path):
    recipient, shown, key_file = reader.create_key()
    parsed = age.parse_recipient(recipient)  # the bot takes it
    assert shown == parsed.fingerprint
    assert reader.find("setkey-command").text == f"/setkey {recipient}"
    assert f"# public key: {recipient}" in key_file and age.parse_identities(key_file)
    assert reader.text("page.create.warning") in reader.driver.find_element("id", "create").text
    summary = _write(tmp_path, "K9-2031-03-28.html.age", age.encrypt(SAMPLE.encode(), parsed))
    reader.open_summary(summary, key_file=next(reader.downloads.glob("imrs-key-*.txt")))
    shown_report = reader.report()
    assert "Readiness summary: K9" in shown_report and "Capybara-55" in shown_report
    assert "SCRIPT RAN" not in shown_report  # the sandbox kept the summary's script from running


def test_a_file_made_by_the_stock_age_tool_opens_with_a_pasted_key(reader: Reader, tmp_path: Path, pair: age.KeyPair):
    binary = shutil.which("age")
    if not binary:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the age binary is missing: CI installs it (.ci/run)")
        pytest.skip("the age binary is not installed (apt-get install age)")
    plain = _write(tmp_path, "summary.html", SAMPLE)
    for armored in (False, True):
        made = tmp_path / f"made-{armored}.age"
        command = [binary, "-r", pair.recipient.text, *(["-a"] if armored else []), "-o", str(made), str(plain)]
        subprocess.run(command, check=True, capture_output=True)
        secret = pair.identity_file.splitlines()[-1]
        reader.open_summary(made, pasted=secret)
        assert "Capybara-55" in reader.report()


def test_the_wrong_key_a_damaged_file_a_non_age_file_and_a_bad_key_each_say_so(
    reader: Reader, tmp_path: Path, pair: age.KeyPair
):
    key = _write(tmp_path, "key.txt", pair.identity_file)
    other = age.generate()
    for_someone_else = _write(tmp_path, "other.html.age", age.encrypt(SAMPLE.encode(), other.recipient))
    reader.open_summary(for_someone_else, key_file=key)
    assert reader.error() == reader.text("errors.not_for_you", fingerprint=pair.fingerprint)

    data = bytearray(age.encrypt(SAMPLE.encode(), pair.recipient))
    data[-5] ^= 0x01
    reader.open_summary(_write(tmp_path, "damaged.html.age", bytes(data)), key_file=key)
    assert reader.error() == reader.text("errors.damaged")

    reader.open_summary(_write(tmp_path, "summary.html", SAMPLE), key_file=key)
    assert reader.error() == reader.text("errors.not_age")

    good = _write(tmp_path, "good.html.age", age.encrypt(SAMPLE.encode(), pair.recipient))
    reader.open_summary(good, key_file=_write(tmp_path, "not-a-key.txt", pair.recipient.text))
    assert reader.error() == reader.text("errors.identity")
    reader.open_summary(good, pasted="AGE-SECRET-KEY-1QQQQ")
    assert reader.error() == reader.text("errors.identity")


def test_the_page_makes_no_network_request(reader: Reader, tmp_path: Path, pair: age.KeyPair):
    """Only the page's own file is loaded; even an address inside a summary is refused by the
    browser (the frame inherits the page's policy), and the log does see the frame's requests."""
    reader.create_key()
    linked = SAMPLE.replace("</h1>", '</h1><img src="https://example.org/pixel.png">')
    summary = _write(tmp_path, "K9.html.age", age.encrypt(linked.encode(), pair.recipient))
    reader.open_summary(summary, key_file=_write(tmp_path, "key.txt", pair.identity_file))
    assert "Capybara-55" in reader.report()
    sent, blocked = reader.requests()
    assert any(url.startswith("file://") and url.endswith("imrs-reader.html") for url in sent), "the log is on"
    assert [url for url in sent if not url.startswith(("file://", "data:", "blob:"))] == []
    assert blocked == ["https://example.org/pixel.png"]


def test_the_dutch_page_speaks_dutch(tmp_path: Path, pair: age.KeyPair):
    for reader in open_reader(tmp_path, "nl"):
        assert reader.find("create-button").text == reader.text("page.create.button") == "Maak mijn sleutel"
        assert reader.driver.title == reader.text("page.title")
        reader.open_summary(_write(tmp_path, "summary.html", SAMPLE), pasted=pair.identity_file)
        assert reader.error() == reader.text("errors.not_age")
