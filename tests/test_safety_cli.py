"""`imrs-bot safety check` as a clinic uses it: a real process, its output and exit codes.

It needs nothing but content/: no token, no database, no keyring (the environment is emptied
of the bot's variables, and the working directory is an empty folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

IMRS_BOT = str(Path(sys.executable).parent / "imrs-bot")
OUR_VARIABLES = ("TELEGRAM_", "DATABASE_URL", "IMRS_", "ADMIN_TELEGRAM_IDS", "WEBHOOK_", "PORT",
                 "DEFAULT_TIMEZONE", "DEFAULT_LANGUAGE", "LOG_LEVEL")


def safety_check(*args: str, stdin: str | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_VARIABLES)}
    return subprocess.run([IMRS_BOT, "safety", "check", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, input=stdin, timeout=60, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_it_prints_the_route_and_the_rule(tmp_path):
    result = safety_check("I want to kill myself tonight", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "risk: rule suicide (en)\n"
    result = safety_check("Kun je me helpen met rescripting van mijn herinnering?", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "boundary: rule rescripting_request (nl)\n")
    result = safety_check("zet mijn herinnering op 9 uur", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "none (nl)\n")
    assert not list(tmp_path.iterdir()), "no database or key file was created"


def test_json_prints_one_object(tmp_path):
    result = safety_check("--json", "ik wil dood", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"route": "risk", "rule": "wish_to_die", "language": "nl"}
    result = safety_check("--json", "--language", "nl", "ok", cwd=tmp_path)
    assert json.loads(result.stdout) == {"route": "none", "rule": None, "language": "nl"}


def test_jsonl_reads_one_text_per_line_and_prints_one_object_per_line(tmp_path):
    texts = ["kms", "what is rescripting?", "", "mijn oom heeft me misbruikt", "I could kill for a coffee"]
    result = safety_check("--jsonl", stdin="\n".join(texts) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["route"] for o in objects] == ["risk", "none", "none", "boundary", "none"]
    assert objects[0] == {"route": "risk", "rule": "suicide", "language": "en"}
    assert objects[3]["rule"] == "trauma_narrative" and objects[3]["language"] == "nl"


@pytest.mark.parametrize("args", [(), ("--jsonl", "some text"), ("--language", "fr", "hello"), ("--nope", "x")])
def test_a_usage_error_exits_2(tmp_path, args):
    result = safety_check(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: imrs-bot" in result.stderr and "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_rules_end_with_one_line_and_exit_2(tmp_path):
    root = tmp_path / "content"
    root.mkdir()
    (root / "safety_rules.en.yaml").write_text("stopwords: [the]\nrules:\n  - id: x\n    route: sometimes\n")
    result = safety_check("--root", str(root), "hello", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "imrs-bot: content/safety_rules.en.yaml: rule 'x': route must be one of risk, boundary (got 'sometimes')"
    ]


def test_main_in_process(capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("I want to die\nhoe werkt imaginaire rescripting?\n"))
    assert main(["safety", "check", "--jsonl", "--language", "nl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"route": "risk", "rule": "wish_to_die", "language": "en"},
        {"route": "none", "rule": None, "language": "nl"},
    ]
