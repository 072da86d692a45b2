#!/usr/bin/env python3
"""Writes (or, with --check, compares) the values table of helm/noc/README.md from the
`## @section` and `## @param name description` comments of values.yaml (the bitnami
readme-generator convention): every value documented, the table never stale."""

from __future__ import annotations

import os
import sys

import yaml

CHART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "noc")
BEGIN, END = "<!-- values table: begin -->", "<!-- values table: end -->"


def lookup(values: dict, dotted: str):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


def table() -> str:
    with open(os.path.join(CHART, "values.yaml")) as f:
        text = f.read()
    values = yaml.safe_load(text)
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("## @section "):
            out += ["", f"### {line.removeprefix('## @section ')}", "", "| Name | Description | Default |", "|---|---|---|"]
        elif line.startswith("## @param "):
            name, _, description = line.removeprefix("## @param ").partition(" ")
            default = lookup(values, name)
            shown = yaml.safe_dump(default, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
            description = description.replace("|", "\\|")
            out.append(f"| `{name}` | {description} | `{shown}` |")
    return "\n".join(out).strip() + "\n"


def undocumented() -> list[str]:
    """Leaf values (or whole maps documented as one) without an @param."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        text = f.read()
    documented = {l.strip().removeprefix("## @param ").split(" ")[0] for l in text.splitlines() if "## @param " in l}
    missing = []

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if name in documented:
                continue
            if isinstance(v, dict) and v:
                walk(v, name + ".")
            else:
                missing.append(name)

    walk(yaml.safe_load(text), "")
    return missing


def main() -> int:
    readme = os.path.join(CHART, "README.md")
    with open(readme) as f:
        current = f.read()
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    wanted = f"{head}{BEGIN}\n{table()}{END}{tail}"
    missing = undocumented()
    if missing:
        print(f"values without an @param comment: {missing}", file=sys.stderr)
        return 1
    if "--check" in sys.argv:
        if wanted != current:
            print("helm/noc/README.md: the values table is stale; run python3 helm/tests/values_table.py", file=sys.stderr)
            return 1
        return 0
    with open(readme, "w") as f:
        f.write(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
