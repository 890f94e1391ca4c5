"""The iptables-save parser: every fixture form, fed whole or in any cut, odd lines recorded and
skipped, and kube-proxy's chain hashing."""

from __future__ import annotations

import pytest

from agent.collect.iptables_parse import Parser, parse_rule, parse_text
from agent.kube_hash import EXT, SVC, endpoint_chain, nft_endpoint_chain_base, nft_service_chain_base, service_chain
from agent.serial import to_jsonable
from bench.gen_iptables import generate
from tests.testbed import FIXTURES

IPT = FIXTURES / "iptables"
ALL_FORMS = sorted(p.name for p in IPT.glob("*.rules"))


@pytest.mark.parametrize("name", ALL_FORMS)
def test_every_fixture_form_parses_without_odd_lines(name: str) -> None:
    rs = parse_text((IPT / name).read_text())
    assert rs.unparsed == () and rs.unparsed_count == 0
    text = (IPT / name).read_text()
    assert sum(t.rule_count for t in rs.tables.values()) == text.count("\n-A ") + text.count("\n-I ")


def test_lines_fed_in_any_cut_read_the_same() -> None:
    text = "".join(generate(120, 3))
    parser = Parser()
    lines = text.splitlines()
    for i in range(0, len(lines), 37):  # cuts through tables and chains
        parser.feed(lines[i:i + 37])
    assert to_jsonable(parser.result()) == to_jsonable(parse_text(text))


@pytest.mark.parametrize("stem", ["v1.3x_TestOverallIPTablesRules", "v1.3x_TestSyncProxyRulesRepeated_01_initial_full",
                                  "v1.28_TestTerminatingEndpointsTrafficPolicyLocal_ready_endpoints_exist"])
def test_restore_input_and_both_save_outputs_read_the_same(stem: str) -> None:
    def essentials(name: str) -> object:
        rs = parse_text((IPT / name).read_text())
        nat = rs.table("nat")
        dispatch = sorted(str((r.chain, r.target, r.destination, r.protocol, r.dport, r.comment))
                          for rules in nat.dispatch.values() for r in rules)
        ladders = {c: (sorted(lad.endpoints), lad.affinity_seconds) for c, lad in nat.ladders.items()}
        return dispatch, ladders, nat.endpoint_dnat

    forms = [f"{stem}.rules", f"{stem}.legacy-save.rules", f"{stem}.nft-save.rules"]
    assert essentials(forms[0]) == essentials(forms[1]) == essentials(forms[2])


def test_odd_lines_are_recorded_and_the_rest_is_read() -> None:
    text = (IPT / "v1.3x_TestOverallIPTablesRules.legacy-save.rules").read_text()
    broken = text.replace("COMMIT\n*filter", "garbage here\n-Z KUBE-SERVICES\nCOMMIT\n*filter")
    rs = parse_text(broken)
    assert rs.unparsed_count == 2 and "garbage here" in rs.unparsed[0] and "-Z KUBE-SERVICES" in rs.unparsed[1]
    good = parse_text(text)
    assert rs.table("nat").ladders == good.table("nat").ladders
    assert rs.table("filter").dispatch == good.table("filter").dispatch


def test_rule_for_an_undeclared_chain_is_unparsed() -> None:
    rs = parse_text("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-NOPE -j ACCEPT\n-A KUBE-SERVICES -j ACCEPT\nCOMMIT\n")
    assert rs.unparsed_count == 1 and "KUBE-NOPE" in rs.unparsed[0]
    assert "KUBE-NOPE" not in rs.table("nat").plain


def test_partial_restore_commands_delete_chains() -> None:
    rs = parse_text((IPT / "v1.3x_TestSyncProxyRulesRepeated_01_initial_full.rules").read_text()
                    + "*nat\n-X KUBE-SEP-UHEGFW77JX3KXTOV\n-X KUBE-SVC-2VJB64SDSIJUP5T6\nCOMMIT\n")
    nat = rs.table("nat")
    assert "KUBE-SEP-UHEGFW77JX3KXTOV" not in nat.chains and "KUBE-SEP-UHEGFW77JX3KXTOV" not in nat.endpoint_dnat
    assert "KUBE-SVC-2VJB64SDSIJUP5T6" not in nat.ladders


def test_parse_rule_parts_and_negations() -> None:
    r = parse_rule('-A KUBE-SVC-X ! -s 10.0.0.0/8 -d 172.30.0.44/32 -p tcp -m comment --comment '
                   '"ns4/svc4:p80 -d 1.1.1.1 \\"quoted\\"" -m tcp --dport 80 -j KUBE-MARK-MASQ')
    assert (r.source, r.destination, r.protocol, r.dport, r.target) == ("!10.0.0.0/8", "172.30.0.44", "tcp", "80",
                                                                        "KUBE-MARK-MASQ")
    assert r.comment == 'ns4/svc4:p80 -d 1.1.1.1 "quoted"'
    r = parse_rule("-A KUBE-EXT-X -m comment --comment pod -m addrtype --src-type LOCAL -g KUBE-SVC-X")
    assert (r.src_type, r.target, r.goto, r.comment) == ("LOCAL", "KUBE-SVC-X", True, "pod")
    with pytest.raises(ValueError):
        parse_rule("COMMIT")


def test_ipv6_host_addresses_drop_128() -> None:
    r = parse_rule("-A KUBE-SERVICES -d fd00:10:96::1/128 -p tcp -m tcp --dport 443 -j KUBE-SVC-X")
    assert r.destination == "fd00:10:96::1"


def test_kube_proxy_chain_hashes() -> None:
    # names from the fixtures, computed from the Service port (and endpoint) alone
    assert service_chain(SVC, "ns1/svc1:p80", "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert service_chain(EXT, "ns2/svc2:p80", "TCP") == "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
    assert service_chain(SVC, "ns1/svc1", "tcp") == "KUBE-SVC-AQI2S6QIMU7PVVRP"
    assert endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert nft_service_chain_base("ns2/svc2:p80", "tcp") == "42NFTM6N-ns2/svc2/tcp/p80"
    assert nft_endpoint_chain_base("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"


@pytest.mark.parametrize("length", [8, 16, 5, 13])  # kube-proxy's lengths (two characters a lookup), and odd ones
def test_fast_hash_equals_the_plain_definition(length: int) -> None:
    from agent.kube_hash import _hash, _hash_reference
    for text in ("ns1/svc1:p80tcp", "a", "", "ns/ü:x" * 40):
        assert _hash(text, length) == _hash_reference(text, length)


def test_an_endpoint_chain_without_a_dnat_has_an_empty_one() -> None:
    """Counted when chains are declared: every declared KUBE-SEP chain needs a DNAT entry, "" for none."""
    text = ("*nat\n:KUBE-SEP-AAAA - [0:0]\n:KUBE-SEP-BBBB - [0:0]\n:KUBE-SEP-CCCC - [0:0]\n:KUBE-SEP-DDDD - [0:0]\n"
            "-A KUBE-SEP-AAAA -s 10.1.0.1 -j KUBE-MARK-MASQ\n"
            "-A KUBE-SEP-BBBB -p tcp -j DNAT --to-destination 10.1.0.2:80\n"
            "-A KUBE-SEP-DDDD -p tcp -j DNAT --to-destination 10.1.0.4:80\nCOMMIT\n"
            "*nat\n-X KUBE-SEP-DDDD\n:KUBE-SEP-EEEE - [0:0]\nCOMMIT\n")  # a table opened again: no count
    rs = parse_text(text)
    assert rs.table("nat").endpoint_dnat == {"KUBE-SEP-AAAA": "", "KUBE-SEP-BBBB": "10.1.0.2:80",
                                             "KUBE-SEP-CCCC": "", "KUBE-SEP-EEEE": ""}


def test_a_probability_that_is_not_a_number_is_recorded_and_skipped() -> None:
    text = ("*nat\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:KUBE-SEP-A - [0:0]\n:KUBE-SEP-B - [0:0]\n"
            "-A KUBE-SVC-AAAAAAAAAAAAAAAA -m statistic --mode random --probability abc -j KUBE-SEP-A\n"
            "-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-B\n"
            "-A KUBE-SEP-A -j DNAT --to-destination 10.1.0.1:80\n-A KUBE-SEP-B -j DNAT --to-destination 10.1.0.2:80\n"
            "COMMIT\n")
    rs = parse_text(text)
    assert list(rs.unparsed) == ["probability is not a number: -A KUBE-SVC-AAAAAAAAAAAAAAAA -m statistic --mode random "
                           "--probability abc -j KUBE-SEP-A"]
    ladder = rs.table("nat").ladders["KUBE-SVC-AAAAAAAAAAAAAAAA"]
    assert (ladder.endpoints, ladder.probabilities, rs.table("nat").rule_count) == (("KUBE-SEP-B",), (None,), 3)
