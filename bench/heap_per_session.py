#!/usr/bin/env python3
"""What one idle session holds, from a heaptrack peaks listing of N idle sessions.

Keeps the allocation sites called once per session (N calls, or N/2 on each of two
workers), names each by its first source line in the project (or else the crate file
under it), and prints bytes per session, largest first, with their total. Sites called a
different number of times (per-process state, the handshake's temporaries) are left out,
so the total is what the sessions themselves keep.

Usage: heaptrack_print --print-peaks 1 --peak-limit 80 ... | bench/heap_per_session.py N
"""
import re
import sys

HEADER = re.compile(r"^([0-9.]+)([KMG]?)B? (?:peak memory )?consumed over (\d+) calls from")
UNIT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
OURS = ("actors/src/", "gateway/src/", "cluster/src/", "app/src/")


def main() -> None:
    sessions = int(sys.argv[1])
    blocks: list[tuple[float, int, list[str]]] = []
    for line in sys.stdin:
        m = HEADER.match(line)
        if m:
            blocks.append((float(m.group(1)) * UNIT[m.group(2)], int(m.group(3)), []))
        elif blocks and line.strip().startswith("at "):
            blocks[-1][2].append(line.strip()[3:])
    per_site: dict[str, float] = {}
    for size, calls, frames in blocks:
        if calls not in (sessions, sessions // 2):
            continue
        ours = [f for f in frames if f.startswith(OURS)]
        crates = [f.split("/src/")[-1] for f in frames if "/registry/src/" in f]
        site = ours[0] if ours else (crates[0] if crates else "?")
        per_site[site] = per_site.get(site, 0.0) + size / sessions
    for site, size in sorted(per_site.items(), key=lambda kv: -kv[1]):
        print(f"{size:7.0f}  {site}")
    print(f"{sum(per_site.values()):7.0f}  bytes per session in all")


if __name__ == "__main__":
    main()
