"""Rule texts for the iptables tests: kube-proxy's partial syncs applied to a restore input as
iptables-restore --noflush applies them."""

from __future__ import annotations


def apply_partial(full: str, partial: str) -> str:
    """What iptables-restore --noflush of `partial` (kube-proxy's partial-sync form: chains declared again
    are flushed, -X deletes) does to the rules of a restore input `full`, as restore input again."""
    rules = parse_lines(full)
    table = None
    for line in partial.splitlines():
        if line.startswith("*"):
            table = rules[line[1:]]
        elif line.startswith(":") and table is not None:
            table.setdefault(line[1:].split()[0], []).clear()
        elif line.startswith("-X ") and table is not None:
            table.pop(line.split()[1], None)
        elif line.startswith("-A ") and table is not None:
            table[line.split()[1]].append(line)
    return render(rules)


def render(tables: dict[str, dict[str, list[str]]]) -> str:
    """Tables of chains of `-A` lines as restore input, chains declared before their rules."""
    out = []
    for name, chains in tables.items():
        out.append(f"*{name}\n")
        out.extend(f":{chain} - [0:0]\n" for chain in chains)
        out.extend(f"{rule}\n" for rule_list in chains.values() for rule in rule_list)
        out.append("COMMIT\n")
    return "".join(out)


def parse_lines(text: str) -> dict[str, dict[str, list[str]]]:
    tables: dict[str, dict[str, list[str]]] = {}
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            table.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            table[line.split()[1]].append(line)
    return tables
