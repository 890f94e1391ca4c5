"""Rule texts for the iptables tests: kube-proxy's partial syncs applied to a restore input as
iptables-restore --noflush applies them, and series of changes."""

from __future__ import annotations

from agent.kube_hash import SVC, service_chain
from bench.gen_iptables import changed_endpoints, generate
from tests.testbed import FIXTURES

IPT = FIXTURES / "iptables"


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
    out = []
    for name, chains in rules.items():
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


def _drop_lines(text: str, *needles: str) -> str:
    """Without the lines holding all of `needles`."""
    return "".join(line for line in text.splitlines(keepends=True) if not all(n in line for n in needles))


def change_sequence() -> list[tuple[str, str]]:
    """(what changed, rule set) in the order a reader sees them: generated Services going through what
    kube-proxy's partial syncs and outside damage do to them, each as restore input (what one save
    prints, chains grouped)."""
    gen = "".join(generate(300, 3))
    steps = [("first read", apply_partial(gen, ""))]

    def then(label: str, text: str) -> None:
        steps.append((label, text))

    last = steps[0][1]
    then("one endpoint of every tenth Service moved", last := apply_partial(last, "".join(
        changed_endpoints(300, 3, every=10))))
    dnat = next(line for line in last.splitlines() if "ns5/svc5:p80" in line and "DNAT" in line)
    then("an endpoint chain lost its DNAT", last := _drop_lines(last, dnat))
    then("a Service's dispatch rule deleted", last := _drop_lines(last, "-A KUBE-SERVICES ", '"ns7/svc7:p80 '))
    rung = next(line for line in last.splitlines() if '"ns9/svc9:p80 -> ' in line and "--probability" in line)
    then("a probability changed", last := last.replace(rung, rung.replace("--probability 0.", "--probability 0.1")))
    then("nothing", last)
    orphan = service_chain(SVC, "ns-x/orphan:p80", "tcp")  # a Service chain no dispatch rule jumps to
    with_orphan = apply_partial(last, f"*nat\n:{orphan} - [0:0]\n-A {orphan} -m comment --comment "
                                      f'"ns-x/orphan:p80 -> 10.1.0.1:8080" -j {rung.split()[-1]}\nCOMMIT\n')
    then("a Service chain nothing jumps to", with_orphan)
    then("and gone again", last)
    then("a Service's name gone from every comment", last := _drop_lines(
        last.replace('-m comment --comment "ns11/svc11:p80 cluster IP" ', ""), "-A KUBE-SERVICES ", '"ns11/svc11:'))
    then("a has-no-endpoints reject", last := apply_partial(last, (
        "*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment \"ns13/svc13:p80 has no endpoints\""
        " -m tcp -p tcp -d 172.30.0.14 --dport 80 -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n")))
    then("twenty Services added", last := apply_partial(apply_partial("".join(generate(320, 3)), ""), ""))
    then("thirty Services removed", last := apply_partial("".join(generate(290, 3)), ""))
    sep = next(line.split()[1] for line in last.splitlines() if line.startswith("-A KUBE-SEP-"))
    then("an endpoint chain deleted under its ladder", broken := _drop_lines(
        last.replace(f":{sep} - [0:0]\n", ""), f"-A {sep} "))
    then("the same again", broken)
    then("repaired", last)
    return steps


def partial_sync_sequence() -> list[tuple[str, str]]:
    """kube-proxy's own partial syncs (fixtures 01 to 09), each applied to what the ones before left."""
    names = sorted(p.name for p in IPT.glob("v1.3x_TestSyncProxyRulesRepeated_*.rules")
                   if not p.name.endswith("-save.rules"))
    steps: list[tuple[str, str]] = []
    text = ""
    for name in names:
        text = apply_partial(text, (IPT / name).read_text()) if text else apply_partial((IPT / name).read_text(), "")
        steps.append((name, text))
    return steps
