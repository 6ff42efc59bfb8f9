#!/usr/bin/env python3
"""Count passed / failed / skipped tests for scripts/test.

    test-counts.py swift LOGFILE   # output of `swift test` (XCTest + Swift Testing)
    test-counts.py junit XMLFILE   # JUnit XML, as written by `pytest --junitxml`

Prints one line "PASSED FAILED SKIPPED" on stdout and a short breakdown on
stderr. Counting rules:

Swift Testing (swift-testing's HumanReadableOutputRecorder, Swift 6.x):
  closing line  "<sym> Test run with N test(s) [in M suite(s)] passed|failed after ..."
  per test      "<sym> Test NAME [with K test cases] failed after ..."
                "<sym> Test NAME skipped[: "why"]" / "... was cancelled after ..."
  A test function counts once (a parameterized test with many cases is one
  test). total = N; failed = the "Test ... failed after" lines; skipped = the
  skipped/cancelled lines; passed = total - failed - skipped. A run that says
  "failed" but named no failing test counts 1 failure. A run that started but
  never printed its closing line (a crash) counts the tests that had passed
  so far, and one failure more.

XCTest (swift-corelibs-xctest):
  "Executed N tests, with [K tests skipped and] M failures ..." after
  "Test Suite 'All tests' passed|failed"; failed = distinct
  "Test Case '...' failed (" lines; skipped = K; passed = N - failed - K.
  Started but never finished (a crash): passed cases so far, one failure more.
"""

import re
import sys
import xml.etree.ElementTree as ET

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Swift Testing
ST_RUN_STARTED = re.compile(r"^(?:\S+\s+)?Test run started\.")
ST_RUN_ENDED = re.compile(
    r"^(?:\S+\s+)?Test run with (\d+) tests?(?: in (\d+) suites?)? (passed|failed) after "
)
# "Test NAME ..." but not "Test run with", "Test case passing" (verbose per-case
# lines) nor XCTest's "Test Case '...'" / "Test Suite '...'".
_ST_TEST = r"^(?:\S+\s+)?Test (?!run with )(?!run started)(?!case passing )(?!Case ')(?!Suite ')"
ST_FAILED = re.compile(_ST_TEST + r"(.+?)(?: with \d+ test cases?)? failed after \d")
ST_PASSED = re.compile(_ST_TEST + r"(.+?)(?: with \d+ test cases?)? passed after \d")
ST_SKIPPED = re.compile(_ST_TEST + r"(.+?) (?:skipped(?:\.$|: \")|was cancelled after \d)")
# Issue lines carry free text (which may say "failed after 3 retries"): never a verdict.
ST_ISSUE = re.compile(r"^(?:\S+\s+)?(?:Test|Suite) .+? recorded (?:an issue|a known issue|a warning)")

# XCTest
XC_ALL_STARTED = re.compile(r"^Test Suite 'All tests' started")
XC_ALL_ENDED = re.compile(r"^Test Suite 'All tests' (passed|failed)")
XC_EXECUTED = re.compile(
    r"Executed (\d+) tests?, with (?:(\d+) tests? skipped and )?(\d+) failures?"
)
XC_CASE_FAILED = re.compile(r"^Test Case '(.+)' failed \(")
XC_CASE_PASSED = re.compile(r"^Test Case '(.+)' passed \(")


def count_swift(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ANSI.sub("", l.rstrip("\r\n")).strip() for l in f]

    # --- Swift Testing
    st_started = st_ended = 0
    st_total = st_fail_lines = st_pass_lines = st_skip_lines = 0
    st_run_failed = False
    # --- XCTest
    xc_started = xc_ended = False
    xc_after_all = False
    xc_total = xc_skipped = 0
    xc_failed_cases, xc_passed_cases = set(), set()

    for line in lines:
        if ST_RUN_STARTED.match(line):
            st_started += 1
            continue
        if ST_ISSUE.match(line):
            continue
        m = ST_RUN_ENDED.match(line)
        if m:
            st_ended += 1
            st_total += int(m.group(1))
            st_run_failed |= m.group(3) == "failed"
            continue
        if ST_FAILED.match(line):
            st_fail_lines += 1
            continue
        if ST_PASSED.match(line):
            st_pass_lines += 1
            continue
        if ST_SKIPPED.match(line):
            st_skip_lines += 1
            continue

        if XC_ALL_STARTED.match(line):
            xc_started = True
            continue
        if XC_ALL_ENDED.match(line):
            xc_ended = True
            xc_after_all = True
            continue
        m = XC_EXECUTED.search(line)
        if m and xc_after_all:
            xc_total = int(m.group(1))
            xc_skipped = int(m.group(2) or 0)
            xc_after_all = False
            continue
        m = XC_CASE_FAILED.match(line)
        if m:
            xc_failed_cases.add(m.group(1))
            continue
        m = XC_CASE_PASSED.match(line)
        if m:
            xc_passed_cases.add(m.group(1))

    notes = []
    # Swift Testing
    if st_ended:
        st_failed = st_fail_lines
        if st_run_failed and st_failed == 0:
            st_failed = 1
            notes.append("Swift Testing reported a failed run without a failing test: counted 1 failure")
        st_skipped = st_skip_lines
        st_passed = max(st_total - st_failed - st_skipped, 0)
    elif st_started:
        st_passed, st_failed, st_skipped = st_pass_lines, st_fail_lines + 1, st_skip_lines
        notes.append("Swift Testing run started but never finished (crash?): counted 1 failure")
    else:
        st_passed = st_failed = st_skipped = 0

    # XCTest
    if xc_ended:
        xc_failed = len(xc_failed_cases)
        xc_passed = max(xc_total - xc_failed - xc_skipped, 0)
    elif xc_started:
        xc_passed, xc_failed, xc_skipped = len(xc_passed_cases), len(xc_failed_cases) + 1, 0
        notes.append("XCTest run started but never finished (crash?): counted 1 failure")
    else:
        xc_passed = xc_failed = xc_skipped = 0

    print(
        f"  Swift Testing: {st_passed} passed, {st_failed} failed, {st_skipped} skipped"
        f"{'' if (st_started or st_ended) else ' (no run found)'}",
        file=sys.stderr,
    )
    print(
        f"  XCTest:        {xc_passed} passed, {xc_failed} failed, {xc_skipped} skipped"
        f"{'' if (xc_started or xc_ended) else ' (no run found)'}",
        file=sys.stderr,
    )
    for n in notes:
        print(f"  note: {n}", file=sys.stderr)
    return st_passed + xc_passed, st_failed + xc_failed, st_skipped + xc_skipped


def count_junit(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"  no JUnit XML ({e})", file=sys.stderr)
        return 0, 0, 0
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = failures = errors = skipped = 0
    for s in suites:
        tests += int(s.get("tests", 0))
        failures += int(s.get("failures", 0))
        errors += int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    failed = failures + errors
    passed = max(tests - failed - skipped, 0)
    print(
        f"  pytest: {passed} passed, {failures} failed, {errors} errors, {skipped} skipped",
        file=sys.stderr,
    )
    return passed, failed, skipped


def main(argv):
    if len(argv) != 3 or argv[1] not in ("swift", "junit"):
        print(__doc__, file=sys.stderr)
        return 2
    counts = count_swift(argv[2]) if argv[1] == "swift" else count_junit(argv[2])
    print(*counts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
