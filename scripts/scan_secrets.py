"""Secret scanner: finds credentials committed to the repository (AWS keys, private keys, passwords in URLs,
vendor tokens, high-entropy values assigned to key/secret/password names) before they leave the machine.

Usage: ``python scripts/scan_secrets.py [--root DIR] [--allowlist FILE] [PATH ...]``. Without paths it
scans every file git tracks under the root. Findings print as ``path:line: rule: redacted excerpt`` (the
value itself is never printed) and the exit status is 1; 0 when clean, 2 on a usage error.

The allowlist (default ``scripts/secret_allowlist.txt``) holds lines ``path-glob  rule  value-sha256-prefix``
for deliberate test fixtures: a finding is allowed only when all three match, so a new secret in an
allowlisted file is still reported. A line ending in ``secret-scan: allow`` is skipped too.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import math
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 2_000_000
INLINE_ALLOW = "secret-scan: allow"
DEFAULT_ALLOWLIST = Path(__file__).with_name("secret_allowlist.txt")
# An assigned value counts as a secret from this Shannon entropy (bits per character) and length on.
MIN_ENTROPY = 3.0
MIN_SECRET_LENGTH = 12
# Values that only point at a secret (environment, templates, placeholders) are not secrets.
_PLACEHOLDER = re.compile(
    r"^(\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{\{.*\}\}|<[^>]*>|\*+|x+|changeme|change-me|example\w*|dummy\w*|"
    r"test(ing)?|none|null|redacted|your[_-].*)$",
    re.IGNORECASE,
)
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:api[_-]?key|apikey|[_-]key\b|secret|token|passw(?:or)?d|pwd|private[_-]?key)"
    r"(?![A-Za-z0-9_.-]*(?:_id|_env|_name|_file|_path|_url|_arn)\b)[A-Za-z0-9_.-]*"
)
# An environment variable's name (MAGIKARP_SMTP_PASSWORD) says where a secret lives, it is not one.
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Neither is a lower-case storage path or key (models/production.json).
_LOWER_PATH = re.compile(r"^[a-z0-9_.-]+(/[a-z0-9_.{}-]+)+$")

RULES: dict[str, re.Pattern[str]] = {
    "aws-access-key-id": re.compile(r"\b((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16})\b"),
    "aws-secret-access-key": re.compile(
        r"(?i)aws[A-Za-z0-9_.-]{0,20}(?:secret|sk)[A-Za-z0-9_.-]{0,20}['\"]?\s*[:=]\s*['\"]?([A-Za-z0-9/+=]{40})\b"
    ),
    "private-key": re.compile(r"(-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----)"),
    "password-in-url": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]+:([^\s@/'\"]+)@[^\s/'\"]+"),
    "github-token": re.compile(r"\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b"),
    "slack-token": re.compile(r"\b(xox[abposr]-[A-Za-z0-9-]{10,})\b"),
    "stripe-live-key": re.compile(r"\b((?:sk|rk)_live_[A-Za-z0-9]{20,})\b"),
    "google-api-key": re.compile(r"\b(AIza[0-9A-Za-z_-]{35})\b"),
    "secret-assignment": re.compile(
        rf"(?i)\b{_SECRET_NAME}['\"]?\s*(?::|=|:=|=>)\s*[bru]?['\"]([^'\"\s]{{{MIN_SECRET_LENGTH},}})['\"]"
    ),
}


@dataclass(frozen=True)
class Finding:
    """One suspected secret: where, which rule, and a fingerprint of the value (never the value)."""

    path: str
    line: int
    rule: str
    fingerprint: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.excerpt} (sha256 {self.fingerprint})"


@dataclass(frozen=True)
class AllowEntry:
    """A deliberate fixture: files matching `glob`, findings of `rule` ('*' for any) with this fingerprint."""

    glob: str
    rule: str
    fingerprint: str

    def allows(self, finding: Finding) -> bool:
        return (
            fnmatch.fnmatch(finding.path, self.glob)
            and self.rule in ("*", finding.rule)
            and finding.fingerprint.startswith(self.fingerprint)
        )


def entropy(value: str) -> float:
    """Shannon entropy of `value` in bits per character (0 for an empty string).

    :param value: the candidate secret.
    """
    if not value:
        return 0.0
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def fingerprint(value: str) -> str:
    """The first 12 hex characters of the value's SHA-256: identifies a secret without revealing it."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def _redact(line: str, value: str) -> str:
    shown = value[:4] + "***" if len(value) > 8 else "***"
    return line.strip().replace(value, shown)[:160]


def _is_secret_value(rule: str, value: str) -> bool:
    """Formats with a vendor prefix are secrets as found; a value merely assigned to a secret-sounding name
    must also look random (and not be a placeholder, an environment variable's name or a storage path)."""
    if rule not in ("secret-assignment", "password-in-url"):
        return True
    if _PLACEHOLDER.match(value) or _ENV_NAME.match(value) or _LOWER_PATH.match(value):
        return False
    return entropy(value) >= MIN_ENTROPY and not value.isalpha()


def scan_text(path: str, text: str) -> list[Finding]:
    """Findings in one file's text.

    :param path: the path reported with each finding (relative to the scanned root).
    :param text: the file's content.
    """
    found: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if INLINE_ALLOW in line:
            continue
        reported: set[str] = set()  # a value is reported once, by the most specific rule (listed first)
        for rule, pattern in RULES.items():
            for match in pattern.finditer(line):
                value = match.group(1)
                if value not in reported and _is_secret_value(rule, value):
                    reported.add(value)
                    found.append(Finding(path, number, rule, fingerprint(value), _redact(line, value)))
    return found


def read_allowlist(path: Path) -> list[AllowEntry]:
    """Entries of an allowlist file (``glob rule fingerprint`` per line, ``#`` comments); none if absent.

    :raises ValueError: naming the file and line of a malformed entry.
    """
    if not path.is_file():
        return []
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or len(parts[2]) < 8:
            raise ValueError(f"{path}, line {number}: expected 'path-glob rule fingerprint(>= 8 hex)'")
        entries.append(AllowEntry(*parts))
    return entries


def tracked_files(root: Path) -> list[str]:
    """Paths git tracks under `root`, relative to it.

    :raises RuntimeError: when `root` is not inside a git work tree.
    """
    done = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=False, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"git ls-files failed in {root}: {done.stderr.strip()}")
    return [p for p in done.stdout.split("\0") if p]


def scan_files(root: Path, paths: Iterable[str], allowlist: Sequence[AllowEntry] = ()) -> list[Finding]:
    """Findings in `paths` (relative to `root`) not covered by `allowlist`; binary and huge files skipped.

    :param root: the folder the paths are relative to.
    :param paths: files to scan.
    :param allowlist: deliberate fixtures to ignore.
    """
    findings = []
    for rel in paths:
        file = root / rel
        if not file.is_file() or file.stat().st_size > MAX_BYTES:
            continue
        data = file.read_bytes()
        if b"\0" in data[:8192]:
            continue
        for finding in scan_text(rel, data.decode("utf-8", errors="replace")):
            if not any(entry.allows(finding) for entry in allowlist):
                findings.append(finding)
    return findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="files to scan (default: every git-tracked file)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: cwd)")
    parser.add_argument("--allowlist", type=Path, default=DEFAULT_ALLOWLIST)
    args = parser.parse_args(argv)
    try:
        paths = args.paths or tracked_files(args.root)
        findings = scan_files(args.root, paths, read_allowlist(args.allowlist))
    except (RuntimeError, ValueError) as error:
        print(f"scan_secrets: {error}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    print(f"scan_secrets: {len(findings)} finding(s) in {len(paths)} file(s)", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
