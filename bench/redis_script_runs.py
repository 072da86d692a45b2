#!/usr/bin/env python3
"""How long each kind of script run kept Redis busy, from its slow log.

Redis runs a script to its end before it serves anything else, so a script's run time is
how long every other client (the nodes' pub/sub among them) waits behind it. The slow
log records each command's execution time inside Redis; with a threshold of 0 it records
every command.

Usage, around a benchmark run:
    redis-cli CONFIG SET slowlog-max-len 1000000
    redis-cli CONFIG SET slowlog-log-slower-than 0
    redis-cli SLOWLOG RESET
    ... the run (e.g. IDLE=1 bench/cluster_storm.sh) ...
    redis-cli CONFIG SET slowlog-log-slower-than 10000
    redis-cli --raw SLOWLOG GET 1000000 > slowlog.txt
    redis-cli CONFIG SET slowlog-max-len 128
    bench/redis_script_runs.py slowlog.txt

Prints one line per script (first 8 hex digits of its SHA1) and number of keys per run:
runs, mean, median, 99th percentile and longest run time, and the mean per key.
"""
import statistics
import sys


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    # `--raw` prints each entry flat: id, time, duration in µs, the arguments, client.
    lines = open(sys.argv[1]).read().split("\n")
    runs = {}
    for i, line in enumerate(lines):
        if line.upper() != "EVALSHA" or i < 1:
            continue
        try:
            micros, sha, keys = int(lines[i - 1]), lines[i + 1][:8], int(lines[i + 2])
        except (ValueError, IndexError):
            continue
        runs.setdefault((sha, keys), []).append(micros)
    for (sha, keys), d in sorted(runs.items(), key=lambda kv: -len(kv[1])):
        d.sort()
        mean = statistics.mean(d)
        print(
            f"script {sha}, {keys:4d} keys: {len(d):6d} runs, mean {mean:7.1f} µs, median {d[len(d) // 2]} µs, "
            f"p99 {d[int(len(d) * 0.99)]} µs, longest {d[-1]} µs, {mean / max(keys, 1):.2f} µs a key"
        )


if __name__ == "__main__":
    main()
