"""The client IP: the socket peer, X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress

from sluicegate.core.http.client_ip import client_ip

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_ip("192.0.2.7", ["198.51.100.1"], []) == "192.0.2.7"


def test_an_untrusted_peer_cannot_claim_another_address() -> None:
    assert client_ip("192.0.2.7", ["198.51.100.1"], PROXIES) == "192.0.2.7"


def test_a_trusted_peer_names_the_client() -> None:
    assert client_ip("10.1.1.1", ["198.51.100.1"], PROXIES) == "198.51.100.1"


def test_the_walk_stops_at_the_first_untrusted_hop_from_the_right() -> None:
    forwarded = ["6.6.6.6, 198.51.100.1, 10.2.2.2"]
    assert client_ip("10.1.1.1", forwarded, PROXIES) == "198.51.100.1"


def test_several_headers_read_as_one_list() -> None:
    forwarded = ["6.6.6.6", "198.51.100.1"]
    assert client_ip("10.1.1.1", forwarded, PROXIES) == "198.51.100.1"


def test_a_malformed_hop_stops_at_the_last_good_address() -> None:
    assert client_ip("10.1.1.1", ["6.6.6.6, garbage, 10.2.2.2"], PROXIES) == "10.2.2.2"


def test_only_trusted_hops_leave_the_leftmost() -> None:
    assert client_ip("10.1.1.1", ["10.3.3.3, 10.2.2.2"], PROXIES) == "10.3.3.3"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert client_ip("10.1.1.1", [], PROXIES) == "10.1.1.1"


def test_an_ipv4_mapped_peer_is_matched_as_ipv4() -> None:
    assert client_ip("::ffff:10.1.1.1", ["198.51.100.1"], PROXIES) == "198.51.100.1"


def test_ipv6_proxies_are_trusted_too() -> None:
    assert client_ip("fd00::1", ["2001:db8::5"], PROXIES) == "2001:db8::5"
