#!/usr/bin/env python3
"""CPU of each process's threads over a window, from /proc, grouped by thread name.

Tells which thread of a relay node does the work: its main thread (the actix system: the
cluster's membership, the bus subscription and the router's bus pump) or its workers
(`actix-rt|system`, where the sessions run). Sampling /proc costs nothing measurable,
unlike perf, so the CPU shares are those of an unobserved run.

Usage: bench/thread_cpu.py PID[,PID...] SECONDS
Prints one line per process and thread name: percent of one core over the window.
"""
import os
import sys
import time


def ticks(pids):
    out = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue  # the thread ended
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            out[(pid, tid, name)] = int(fields[11]) + int(fields[12])  # utime + stime
    return out


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pids, seconds = sys.argv[1].split(","), float(sys.argv[2])
    before = ticks(pids)
    time.sleep(seconds)
    after = ticks(pids)
    hz = os.sysconf("SC_CLK_TCK")
    by_name = {}
    for (pid, tid, name), t in after.items():
        used = t - before.get((pid, tid, name), t)
        by_name[(pid, name)] = by_name.get((pid, name), 0) + used
    for (pid, name), used in sorted(by_name.items()):
        share = used / hz / seconds * 100
        if share >= 0.1:
            print(f"{pid} {name:24s} {share:5.1f}%")


if __name__ == "__main__":
    main()
