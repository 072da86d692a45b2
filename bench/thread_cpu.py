#!/usr/bin/env python3
"""CPU and wake-ups of each process's threads over a window, from /proc, by thread name.

Tells which thread of a relay node does the work: its main thread (the actix system: the
cluster's membership, the bus subscription and the router's bus pump) or its workers
(`actix-rt|system`, where the sessions run). Sampling /proc costs nothing measurable,
unlike perf, so the CPU shares are those of an unobserved run.

A thread's voluntary context switches are the times it went to sleep (in `epoll_wait`, on
a futex) and was woken again: with idle sessions, what a node costs follows them more
than the work done per wake-up.

Usage: bench/thread_cpu.py PID[,PID...] SECONDS
Prints one line per process and thread name: percent of one core over the window (to a
hundredth: /proc counts in ticks of 10 ms, about 0.02% over a minute), then
voluntary and involuntary context switches a second. With several PIDs, a last line sums
them all.
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
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    status = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            out[(pid, tid, name)] = (
                int(fields[11]) + int(fields[12]),  # utime + stime
                int(status["voluntary_ctxt_switches"]),
                int(status["nonvoluntary_ctxt_switches"]),
            )
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
    for (pid, tid, name), now in after.items():
        then = before.get((pid, tid, name), now)
        sums = by_name.setdefault((pid, name), [0, 0, 0])
        for i, (a, b) in enumerate(zip(now, then)):
            sums[i] += a - b
    total = [0, 0, 0]
    for (pid, name), (used, vol, invol) in sorted(by_name.items()):
        total = [total[0] + used, total[1] + vol, total[2] + invol]
        share = used / hz / seconds * 100
        if share >= 0.1 or vol / seconds >= 1:
            print(f"{pid} {name:24s} {share:6.2f}% {vol / seconds:9.1f} vol/s {invol / seconds:7.1f} invol/s")
    if len(pids) > 1:
        share = total[0] / hz / seconds * 100
        print(f"{'all':>{len(pids[0])}} {'':24s} {share:6.2f}% {total[1] / seconds:9.1f} vol/s {total[2] / seconds:7.1f} invol/s")


if __name__ == "__main__":
    main()
