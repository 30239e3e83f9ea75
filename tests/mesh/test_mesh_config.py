"""Contrast's service-mesh annotation grammar, and the redirection rules it turns into."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contrast.mesh.config import (
    EgressRule,
    Ingress,
    IngressRule,
    MeshConfigError,
    PortMode,
    parse,
    parse_admin_port,
    parse_egress,
    parse_ingress,
)
from contrast.mesh.netfilter import ingress_ruleset, ipv6_ruleset
from contrast.meshproxy.proxy import Forward, parse_resolve

# ---- ingress -------------------------------------------------------------------------------------------


def test_empty_or_absent_ingress_means_mutual_tls_everywhere() -> None:
    for value in (None, ""):
        ingress = parse_ingress(value)
        assert ingress.enabled
        assert ingress.rules == ()
        assert ingress.mode(8080) is PortMode.MTLS


def test_disabled_ingress() -> None:
    assert parse_ingress("DISABLED") == Ingress(enabled=False)


def test_contrast_documentation_example() -> None:
    ingress = parse_ingress("web#8080#false##metrics#7890#true")
    assert ingress.rules == (IngressRule("web", 8080, False), IngressRule("metrics", 7890, True))
    assert ingress.mode(8080) is PortMode.TLS
    assert ingress.mode(7890) is PortMode.PASSTHROUGH
    assert ingress.mode(9000) is PortMode.MTLS


def test_go_boolean_spellings_and_empty_entries() -> None:
    """Contrast parses disableTLS with Go's strconv.ParseBool and skips empty entries."""
    ingress = parse_ingress("##a#1#1##b#2#F####c#3#TRUE##")
    assert [(r.port, r.disable_tls) for r in ingress.rules] == [(1, True), (2, False), (3, True)]


@pytest.mark.parametrize(
    "value",
    [
        "web#8080",  # two fields
        "web#8080#false#x",  # four fields
        "web#http#false",  # port not a number
        "web#0#false",  # port out of range
        "web#65536#false",
        "web#-1#false",
        "web#8080#yes",  # not a Go boolean
        "web#8080#",
        "web#8080#false##api#8080#true",  # one port, two modes
        "web#８０#false",  # non-ASCII digits
    ],
)
def test_invalid_ingress(value: str) -> None:
    with pytest.raises(MeshConfigError):
        parse_ingress(value)


# ---- egress --------------------------------------------------------------------------------------------


def test_egress_documentation_example() -> None:
    rules = parse_egress("billing#127.137.0.1:8081#billing-svc:8080##cart#127.137.0.2:8081#cart-svc:8080")
    assert rules == (
        EgressRule("billing", "127.137.0.1", 8081, "billing-svc", 8080),
        EgressRule("cart", "127.137.0.2", 8081, "cart-svc", 8080),
    )


def test_egress_remote_ipv6_and_fqdn() -> None:
    (a, b) = parse_egress("a#127.0.0.2:1#[fd00::1]:443##b#127.255.255.254:2#api.shop.svc.cluster.local:8443")
    assert a.remote == ("fd00::1", 443)
    assert b.remote == ("api.shop.svc.cluster.local", 8443)


@pytest.mark.parametrize(
    "value",
    [
        "a#10.0.0.1:80#b:80",  # listen outside 127.0.0.0/8
        "a#0.0.0.0:80#b:80",
        "a#[::1]:80#b:80",  # IPv6 loopback is not in 127.0.0.0/8
        "a#localhost:80#b:80",  # a name, not an address
        "a#127.0.0.1#b:80",  # no listen port
        "a#127.0.0.1:0#b:80",
        "a#127.0.0.1:80#b",  # no remote port
        "a#127.0.0.1:80#:80",  # no remote host
        "a#127.0.0.1:80#b:99999",
        "a#127.0.0.1:80#b c:80",
        "a#127.0.0.1:80",  # two fields
        "a#127.0.0.1:80#b:80##c#127.0.0.1:80#d:80",  # one listen address twice
    ],
)
def test_invalid_egress(value: str) -> None:
    with pytest.raises(MeshConfigError):
        parse_egress(value)


def test_admin_port_and_san_flag() -> None:
    assert parse_admin_port(None) is None
    assert parse_admin_port("9901") == 9901
    with pytest.raises(MeshConfigError):
        parse_admin_port("admin")
    assert parse(None, None, None).verify_egress_san
    assert not parse(None, None, None, "false").verify_egress_san
    with pytest.raises(MeshConfigError):
        parse(None, None, None, "off")


_name = st.text(st.characters(blacklist_characters="#", min_codepoint=33, max_codepoint=126), max_size=8)


@given(st.lists(st.tuples(_name, st.integers(1, 65535), st.booleans()), max_size=6, unique_by=lambda r: r[1]))
def test_ingress_round_trip(rules: list[tuple[str, int, bool]]) -> None:
    text = "##".join(f"{n}#{p}#{str(d).lower()}" for n, p, d in rules)
    assert parse_ingress(text).rules == tuple(IngressRule(n, p, d) for n, p, d in rules)


# ---- redirection rules ---------------------------------------------------------------------------------


def test_ruleset_follows_contrast() -> None:
    ruleset = ingress_ruleset(parse_ingress("web#8080#false##metrics#7890#true"), add_jump=True)
    assert ruleset.splitlines() == [
        "*mangle",
        ":CONTRAST_INBOUND - [0:0]",
        ":CONTRAST_IN_REDIRECT - [0:0]",
        "-A PREROUTING -p tcp -j CONTRAST_INBOUND",
        "-A CONTRAST_INBOUND -p tcp -i lo -j RETURN",
        "-A CONTRAST_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-A CONTRAST_INBOUND -p tcp -j CONTRAST_IN_REDIRECT",
        "-A CONTRAST_IN_REDIRECT -p tcp --dport 8080 -j TPROXY --on-port 15007",
        "-A CONTRAST_IN_REDIRECT -p tcp --dport 7890 -j RETURN",
        "-A CONTRAST_IN_REDIRECT -p tcp -j TPROXY --on-port 15006",
        "COMMIT",
    ]


def test_ruleset_without_exceptions_redirects_everything_to_mutual_tls() -> None:
    lines = ingress_ruleset(parse_ingress(""), add_jump=False).splitlines()
    assert "-A PREROUTING -p tcp -j CONTRAST_INBOUND" not in lines  # already there: not added twice
    assert [ln for ln in lines if ln.startswith("-A CONTRAST_IN_REDIRECT")] == [
        "-A CONTRAST_IN_REDIRECT -p tcp -j TPROXY --on-port 15006"
    ]


def test_disabled_ingress_has_no_ruleset() -> None:
    with pytest.raises(ValueError, match="DISABLED"):
        ingress_ruleset(parse_ingress("DISABLED"), add_jump=True)


def test_ipv6_fails_closed_except_loopback_and_passthrough() -> None:
    """Redirection is IPv4 (as Contrast's); over IPv6 a new inbound connection is refused, not let through."""
    lines = ipv6_ruleset(parse_ingress("web#8080#false##metrics#7890#true"), add_jump=True).splitlines()
    assert lines == [
        "*filter",
        ":CONTRAST_INBOUND - [0:0]",
        "-A INPUT -p tcp -j CONTRAST_INBOUND",
        "-A CONTRAST_INBOUND -p tcp -i lo -j RETURN",
        "-A CONTRAST_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        "-A CONTRAST_INBOUND -p tcp --dport 7890 -j RETURN",
        "-A CONTRAST_INBOUND -p tcp -j REJECT --reject-with tcp-reset",
        "COMMIT",
    ]


def test_local_forward_and_resolve_syntax() -> None:
    assert Forward.parse("8443@127.0.0.1:0->127.0.0.1:9000") == Forward(
        8443, ("127.0.0.1", 0), ("127.0.0.1", 9000)
    )
    assert Forward.parse("80@[::1]:81->[::1]:82").target == ("::1", 82)
    assert parse_resolve("api:8443=127.0.0.1:4000") == (("api", 8443), ("127.0.0.1", 4000))
    for bad in (
        "8443@127.0.0.1:1",
        "0@127.0.0.1:1->127.0.0.1:2",
        "x@a:1->b:2",
        "1@a:1->b:0",
        "1@a:70000->b:2",
    ):
        with pytest.raises(ValueError, match="invalid forward"):
            Forward.parse(bad)
    with pytest.raises(ValueError, match="resolve"):
        parse_resolve("api:8443")
