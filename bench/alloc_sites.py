#!/usr/bin/env python3
"""Groups the malloc samples of `perf script -F ip,sym` (read from stdin) by the first
frames above the allocator: which code allocates, with the share of all samples.

Frames of the allocator, of Vec/String/Bytes growth and of inlined helpers are skipped,
so that each sample is named by the code that asked for memory.

Usage: perf script -i perf.data -F ip,sym | bench/alloc_sites.py [FRAMES] [ROWS]
"""
import collections
import re
import sys

SKIP = re.compile(
    r"malloc|alloc::|alloc_impl|allocate|raw_vec|RawVec|Vec<|vec::|to_vec|clone|Clone|bytes::|BytesMut"
    r"|String|__rust|realloc|Box<|boxed|from_elem|with_capacity|reserve|grow|finish_grow"
    r"|exchange_malloc|extend|Extend|push|spec_|SpecFrom|collect|from_iter|FromIterator"
    r"|hashbrown|HashMap|insert|core::|unknown|\(inlined\)$"
)


def main() -> None:
    depth = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    stacks, current = [], []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            if current:
                stacks.append(current)
                current = []
            continue
        parts = line.split(None, 1)
        if len(parts) == 2:
            current.append(parts[1])
    if current:
        stacks.append(current)
    counts = collections.Counter()
    for stack in stacks:
        frames = [f for f in stack[1:] if not SKIP.search(f)]
        counts[" <- ".join(f[:100] for f in frames[:depth]) or "(allocator frames only)"] += 1
    total = max(len(stacks), 1)
    print(f"{len(stacks)} malloc samples")
    for site, n in counts.most_common(rows):
        print(f"{100 * n / total:5.1f}% {site}")


if __name__ == "__main__":
    main()
