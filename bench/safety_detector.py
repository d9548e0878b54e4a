"""The safety detector's cost: per message, and to load.

* load: ``SafetyDetector.from_content()`` (read both rule files, check and compile every
  phrase), median of 5;
* table, first pass: every message of tests/data/safety_table.tsv once, on a freshly loaded
  detector (its spelling-correction cache empty: every word seen for the first time);
* table, warm: every message, 50 rounds, each call timed on its own;
* long messages (4096 characters, Telegram's maximum): benign chat text with sentences; one
  long sentence without punctuation; the same with a risk phrase at the very end (every rule
  is tried before the last one matches). 200 calls each.

Per message: mean, p50, p95, p99 (microseconds). The goal (issue 11) is at most 1 ms p95 per
message. Run: ``.venv/bin/python bench/safety_detector.py [rounds]``
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.safety import SafetyDetector  # noqa: E402

TABLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "safety_table.tsv"
MAX_MESSAGE = 4096


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def line(name: str, samples_ns: list[int]) -> str:
    us = sorted(v / 1000 for v in samples_ns)
    return (f"{name:<44} n={len(us):>6}  mean {statistics.fmean(us):8.1f}  p50 {percentile(us, .5):8.1f}  "
            f"p95 {percentile(us, .95):8.1f}  p99 {percentile(us, .99):8.1f}  µs")


def timed(detector: SafetyDetector, texts: list[str], rounds: int) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for text in texts:
            start = clock()
            detector.classify(text)
            samples.append(clock() - start)
    return samples


def fill(pieces: list[str], separator: str) -> str:
    text, i = "", 0
    while len(text) < MAX_MESSAGE:
        text += pieces[i % len(pieces)] + separator
        i += 1
    return text[:MAX_MESSAGE]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with TABLE.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [r["text"] for r in rows]
    # Long texts from the dev rows only (the holdout rows are not looked at while tuning).
    benign = [r["text"].rstrip(".!?") for r in rows if r["expected_route"] == "none" and r["split"] == "dev"]

    loads = []
    for _ in range(5):
        start = time.perf_counter()
        detector = SafetyDetector.from_content()
        loads.append(time.perf_counter() - start)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"load (both rule files, compiled): median {statistics.median(loads) * 1000:.1f} ms "
          f"(min {min(loads) * 1000:.1f}, max {max(loads) * 1000:.1f})")
    rules = sum(len(rs.rules) for rs in detector.rule_sets.values())
    patterns = sum(len(r.patterns) for rs in detector.rule_sets.values() for r in rs.rules)
    print(f"{rules} rules, {patterns} patterns, {len(texts)} table messages\n")

    fresh = SafetyDetector.from_content()
    print(line("table, first pass (cold caches)", timed(fresh, texts, 1)))
    print(line(f"table, warm ({rounds} rounds)", timed(detector, texts, rounds)))

    long_benign = fill(benign, ". ")
    long_sentence = fill(benign, " ")
    long_risk_last = long_sentence[: MAX_MESSAGE - 30] + " and i want to kill myself"
    for name, text in (("long benign chat, 4096 chars", long_benign),
                       ("long sentence, no punctuation, 4096 chars", long_sentence),
                       ("long, risk phrase at the end, 4096 chars", long_risk_last)):
        verdict = detector.classify(text)
        print(line(f"{name}", timed(detector, [text], 200)) + f"  -> {verdict.route}")


if __name__ == "__main__":
    main()
