#!/usr/bin/env python3
"""Messages per publish round on the bus, and Redis's CPU, while a benchmark runs.

    python3 bench/bus_rounds.py poll OUT.txt [PORTS...]   # every 5 s until killed
    python3 bench/bus_rounds.py summary OUT.txt           # one line per 5 s with traffic

`poll` appends, every 5 s, a line per node: the time, the node's admin port, Redis's CPU
ticks (utime + stime of the `redis-server` process, in 1/100 s), and the node's
`noc_bus_messages_received_total`, `noc_bus_messages_sent_total` and
`noc_bus_publish_duration_seconds_count` (one per publish round and target node). The
ports default to those of bench/cross_node.sh (19090 for node A, 19091 for node B).

`summary` prints, for each 5 s with bus traffic: Redis's CPU in percent of one core, and
per node the messages sent per second and per publish round. Run `poll` beside the
benchmark, e.g.:

    python3 bench/bus_rounds.py poll /tmp/bus.txt & P=$!
    bench/cross_node.sh; kill $P
    python3 bench/bus_rounds.py summary /tmp/bus.txt
"""
import subprocess
import sys
import time
import urllib.request

METRICS = (
    "noc_bus_messages_received_total",
    "noc_bus_messages_sent_total",
    "noc_bus_publish_duration_seconds_count",
)


def redis_ticks():
    pid = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split()
    if not pid:
        return 0
    with open(f"/proc/{pid[0]}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def scrape(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in METRICS:
            values[name] = value.strip()
    return " ".join(values.get(m, "0") for m in METRICS)


def poll(out, ports):
    while True:
        ticks = redis_ticks()
        now = int(time.time())
        with open(out, "a") as f:
            for port in ports:
                values = scrape(port)
                if values is not None:
                    f.write(f"{now} {port} {ticks} {values}\n")
        time.sleep(5)


def summary(path):
    rows = {}
    for line in open(path):
        f = line.split()
        if len(f) != 6:
            continue
        rows.setdefault(f[1], []).append((int(f[0]), int(f[2]), *map(float, f[3:])))
    ports = sorted(rows)
    by_time = [{r[0]: r for r in rows[p]} for p in ports]
    times = sorted(set.intersection(*(set(t) for t in by_time))) if by_time else []
    for prev, now in zip(times, times[1:]):
        dt = now - prev
        if dt <= 0:
            continue
        parts, total = [], 0.0
        for port, series in zip(ports, by_time):
            a, b = series[prev], series[now]
            sent = (b[3] - a[3]) / dt
            rounds = (b[4] - a[4]) / dt
            total += sent
            parts.append(f"{port}: {sent:7.0f} sent/s, {sent / rounds if rounds else 0:5.1f} per round")
        if total < 100:
            continue
        redis = (by_time[0][now][1] - by_time[0][prev][1]) / dt
        print(f"{now} redis {redis:5.1f}%  " + "  ".join(parts))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "poll":
        poll(sys.argv[2], [int(p) for p in sys.argv[3:]] or [19090, 19091])
    elif len(sys.argv) == 3 and sys.argv[1] == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
