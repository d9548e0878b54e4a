"""`make check`'s dependency audit: pip-audit over the installed environment (the project itself,
installed editable, is left out), failing on any known vulnerability.

pip-audit asks PyPI about each installed release (/pypi/NAME/VERSION/json). Where that per-release
page cannot be had (a mirror or proxy that serves only /pypi/NAME/json answers 404, and pip-audit
then skips the package as "not found"), a silent pass would audit nothing. For those packages this
falls back to /pypi/NAME/json, whose "vulnerabilities" are those of the newest release: when the
installed release is the newest, that is the same answer; otherwise the package is listed as not
audited (a warning, not a failure: nothing known is wrong with it, we just could not ask).

Run: .venv/bin/python .ci/audit.py   (exit 1: a known vulnerability; 2: the audit could not run)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import distributions
from pathlib import Path

PYPI = "https://pypi.org/pypi"

# A known vulnerability is fixed by upgrading the package. Only one that cannot affect this
# project may be ignored, here, with the reason: {"GHSA-...": "why it does not apply to us"}.
IGNORED: dict[str, str] = {}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def latest(name: str) -> tuple[str, list[dict]]:
    with urllib.request.urlopen(f"{PYPI}/{name}/json", timeout=30) as response:  # nosec B310 - a fixed https URL
        page = json.load(response)
    return page["info"]["version"], page.get("vulnerabilities") or []


def main() -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    run = subprocess.run(  # nosec B603 - our own venv's pip-audit, fixed arguments
        [str(pip_audit), "--local", "--skip-editable", "--progress-spinner", "off", "--format", "json",
         *(arg for vuln in IGNORED for arg in ("--ignore-vuln", vuln))],
        capture_output=True, text=True,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(run.stderr or run.stdout)
        print("pip-audit did not run", file=sys.stderr)
        return 2
    found: list[str] = []
    audited = 0
    skipped: list[str] = []
    for dep in report["dependencies"]:
        if "skip_reason" in dep:
            if "not found on PyPI" in dep["skip_reason"]:
                skipped.append(dep["name"])
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            fixed = ", ".join(vuln.get("fix_versions", [])) or "none yet"
            found.append(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")

    installed = {canonical(d.metadata["Name"]): d.version for d in distributions()}
    unaudited: list[str] = []
    if skipped:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(latest, skipped))
        for name, (newest, vulns) in zip(skipped, answers, strict=True):
            version = installed.get(canonical(name), "?")
            if version != newest:
                unaudited.append(f"{name} {version} (newest {newest})")
                continue
            audited += 1
            for vuln in vulns:
                if not vuln.get("withdrawn") and not {vuln["id"], *vuln.get("aliases", [])} & set(IGNORED):
                    fixed = ", ".join(vuln.get("fixed_in", [])) or "none yet"
                    found.append(f"{name} {version}: {vuln['id']} (fixed in {fixed})")

    print(f"pip-audit: {audited} packages audited"
          + (f" ({len(skipped)} through PyPI's newest-release page)" if skipped else ""))
    if unaudited:
        print(f"not audited (PyPI's per-release page unavailable and not the newest release): {', '.join(unaudited)}")
    for line in found:
        print(f"VULNERABLE {line}")
    if run.returncode not in (0, 1) or (run.returncode == 1 and not found):
        sys.stderr.write(run.stderr)
        return 2
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
