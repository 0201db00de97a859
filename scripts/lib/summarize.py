#!/usr/bin/env python3
"""Adds up Criterion's JSON reports: prints every skipped test with its reason, then one line
'tests: N passed, N failed, N skipped'. Exits 1 when a test failed, or when skips are forbidden
(--no-skips) and one happened."""
import json
import re
import sys


def load(path):
    """Criterion's report; its messages are not always escaped JSON (a message that quotes a
    JSON line breaks the file), so the counts and the skipped tests are then read by pattern."""
    text = open(path).read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        print(f"note: {path} is not valid JSON (unescaped messages); counted by pattern")
        count = lambda key: int(re.search(rf'"{key}":\s*(\d+)', text).group(1))
        skipped = [{"name": "tests", "tests": [{"name": m.group(1), "status": "SKIPPED"}
                                                for m in re.finditer(
                                                    r'"name":\s*"([^"]+)",\s*"assertions":\s*\d+,\s*"status":\s*"SKIPPED"',
                                                    text)]}]
        return {k: count(k) for k in ("passed", "failed", "errored", "skipped")} | {
            "test_suites": skipped}


args = [a for a in sys.argv[1:] if not a.startswith("--")]
forbid_skips = "--no-skips" in sys.argv
passed = failed = skipped = 0
for path in args:
    report = load(path)
    passed += report["passed"]
    failed += report["failed"] + report["errored"]
    skipped += report["skipped"]
    for suite in report["test_suites"]:
        for test in suite["tests"]:
            if test["status"] == "SKIPPED":
                why = "; ".join(test.get("messages", [])) or "no reason given"
                print(f"skipped: {suite['name']}::{test['name']}: {why}")
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
if failed:
    sys.exit(1)
if forbid_skips and skipped:
    print("error: tests skipped although /dev/kvm is usable and CI=true", file=sys.stderr)
    sys.exit(1)
