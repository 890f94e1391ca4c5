"""Dump the legacy iptables tables through libiptc (python-iptables), as JSON, for the oracle test.

Run inside the node's netns: `python iptc_dump.py OUT.json TABLE...`. Only name tables that exist
(/proc/net/ip_tables_names): opening a missing one creates it. python-iptables redirects the process's
stdout while it reads, so the result goes to a file.
"""

from __future__ import annotations

import json
import sys

import iptc  # type: ignore[import-untyped]


def rule_view(rule: iptc.Rule) -> dict[str, object]:
    comment = next((m.comment for m in rule.matches if m.name == "comment"), None)
    target = rule.target.name if rule.target is not None else ""
    dnat = rule.target.to_destination if target == "DNAT" else None
    dst = rule.dst if rule.dst and rule.dst != "0.0.0.0/0.0.0.0" else None
    return {"target": target, "comment": comment, "dnat": dnat, "dst": dst}


def main() -> None:
    out, tables = sys.argv[1], sys.argv[2:]
    dump: dict[str, dict[str, list[dict[str, object]]]] = {}
    for name in tables:
        table = iptc.Table(name)
        table.refresh()
        dump[name] = {chain.name: [rule_view(r) for r in chain.rules] for chain in table.chains}
    with open(out, "w") as f:
        json.dump(dump, f)


if __name__ == "__main__":
    main()
