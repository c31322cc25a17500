"""Reads a Prism proxy log and fails on any finding that is not relaxed.

usage: prism-findings.py LOG LABEL MIN_REQUESTS [PATH_REGEX=STATUS ...]

Each PATH_REGEX=STATUS relaxes "Unable to match the returned status code" for an
upstream call whose path matches and whose status is STATUS (a documented answer the
description leaves out). A response finding is attributed to the upstream call Prism
logged just before it. Fewer than MIN_REQUESTS requests through Prism also fails.
"""
import re
import sys

log, label, minimum = sys.argv[1], sys.argv[2], int(sys.argv[3])
relaxed = []
for rule in sys.argv[4:]:
    path, status = rule.rsplit("=", 1)
    relaxed.append((re.compile(path), status))
upstream = re.compile(r"The upstream call to (\S+) has returned (\d+)")
last = (None, None)
requests, problems, allowed = 0, [], 0
for line in open(log, encoding="utf-8", errors="replace"):
    if "Request received" in line:
        requests += 1
    m = upstream.search(line)
    if m:
        last = (m.group(1), m.group(2))
        continue
    if "Violation" in line or "\u2716" in line:
        path, status = last
        status_only = "Unable to match the returned status code" in line
        if status_only and path and any(p.search(path) and status == s for p, s in relaxed):
            allowed += 1
            continue
        problems.append(line.rstrip())
print(f"   Prism saw {requests} requests; {allowed} relaxed findings")
if problems:
    print(f"conformance ({label}): spec violations:")
    print("\n".join(problems))
    sys.exit(1)
if requests < minimum:
    print(f"conformance ({label}): too few requests went through Prism ({requests} < {minimum})")
    sys.exit(1)
