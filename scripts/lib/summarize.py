#!/usr/bin/env python3
"""Adds up Criterion's JSON reports: prints every skipped test with its reason, then one line
'tests: N passed, N failed, N skipped'. Exits 1 when a test failed, or when skips are forbidden
(--no-skips) and one happened."""
import json
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
forbid_skips = "--no-skips" in sys.argv
passed = failed = skipped = 0
for path in args:
    with open(path) as f:
        report = json.load(f)
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
