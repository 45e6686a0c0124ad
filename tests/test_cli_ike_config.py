"""Crypto template, IKE SA transform sets and the SecGW service: grammar, limits, round trip."""

from test_cli_fuzz import FakeSystem

from supervisor.cli import Engine
from supervisor.ike import commands as ike

CONFIG = """\
config
  context segw
    ikev2-ikesa transform-set ts-gcm
      encryption aes-gcm-256
      group 19
      prf sha2-384
      lifetime 28800
    #exit
    crypto template segw-tmpl ikev2-dynamic
      authentication local certificate
      authentication remote certificate
      certificate name segw
      ca-certificate list ca-cert-name lab-root ca-cert-name lab-issuing
      ikev2-ikesa transform-set list ts-gcm
      ikev2-ikesa retransmission-timeout 500
      ikev2-ikesa max-retransmissions 5
      max-childsa 2 overload-action terminate
    #exit
    wsg-service segw-svc
      bind address 127.0.0.2 port 5500 crypto-template segw-tmpl
    #exit
  #exit
end
"""


def engine():
    return Engine(FakeSystem(), plugins=[ike.register])


def test_a_template_configuration_applies_and_round_trips():
    eng = engine()
    assert eng.apply_boot(CONFIG) == []
    text = eng.config_text()
    again = engine()
    assert again.apply_boot(text) == [] and again.config_text() == text
    tree = eng.projection()["config"]
    assert "segw-tmpl" in str(tree) and "127.0.0.2" in str(tree)


def test_prompts_of_the_template_modes():
    s = engine().new_session()
    for line in ("configure", "context segw"):
        s.execute(line)
    s.execute("crypto template t ikev2-dynamic")
    assert s.prompt == f"[segw]{FakeSystem.platform}(cfg-crypto-tmpl-ikev2-tunnel)#"
    s.execute("exit")
    s.execute("ikev2-ikesa transform-set ts")
    assert s.prompt.endswith("(cfg-ctx-ikev2ikesa-tran-set)#")


def test_limits_from_the_reference():
    s = engine().new_session()
    for line in ("configure", "context segw", "crypto template t ikev2-dynamic"):
        assert not s.execute(line).error
    assert s.execute("ikev2-ikesa retransmission-timeout 299").error
    assert s.execute("ikev2-ikesa max-retransmissions 9").error
    assert s.execute("max-childsa 6").error
    res = s.execute("ikev2-ikesa transform-set list a b c d e f g")
    assert res.error and "at most 6" in res.output
    assert s.execute("ca-certificate list ca-cert-name a ca-cert-name a").error


def test_a_service_binds_only_an_existing_template():
    s = engine().new_session()
    for line in ("configure", "context segw", "wsg-service svc"):
        s.execute(line)
    res = s.execute("bind address 192.0.2.1 crypto-template nope")
    assert res.error and "not configured" in res.output


def test_no_forms():
    eng = engine()
    eng.apply_boot(CONFIG)
    s = eng.new_session()
    for line in ("configure", "context segw", "crypto template segw-tmpl ikev2-dynamic"):
        s.execute(line)
    assert not s.execute("no ca-certificate").error
    assert not s.execute("no max-childsa").error
    text = eng.config_text()
    assert "ca-certificate list" not in text and "max-childsa" not in text


CHILD_CONFIG = """\
config
  context segw
    ipsec transform-set esp-gcm
      encryption aes-gcm-256
      group none
      lifetime 3600
    #exit
    ipsec transform-set esp-cbc
      encryption aes-cbc-128
      hmac sha2-256-128
      group 19
    #exit
    crypto template t ikev2-dynamic
      authentication local certificate
      certificate name segw
      ikev2-ikesa rekey
      dpd interval 30 retry-interval 5 maximum-retry 4
      max-childsa 3 overload-action terminate
      payload gtp match childsa match ipv4
        ipsec transform-set list esp-gcm esp-cbc
        tsi start-address 198.51.100.66 end-address 198.51.100.66 protocol 17 start-port 100 end-port 100
        tsr start-address 0.0.0.0 end-address 255.255.255.255 protocol 17 start-port 300 end-port 300
        lifetime 7200
        rekey
      #exit
      payload oam match childsa match ipv4
        ipsec transform-set list esp-cbc
        tsi start-address 198.51.100.66 end-address 198.51.100.66 protocol 17 start-port 200 end-port 200
        tsr start-address 0.0.0.0 end-address 255.255.255.255 protocol 17 start-port 400 end-port 400
      #exit
    #exit
    crypto map to-core ikev2-ipv6
      peer fd00::1 port 4500
      bind address ::1 port 5600
      authentication local certificate
      authentication remote certificate
      certificate name segw
      ca-certificate list ca-cert-name lab-root
      ikev2-ikesa transform-set list ts-gcm
      payload all match ipv6
        ipsec transform-set list esp-gcm
      #exit
    #exit
  #exit
end
"""


def test_payloads_and_crypto_maps_apply_and_round_trip():
    eng = engine()
    assert eng.apply_boot(CHILD_CONFIG) == []
    text = eng.config_text()
    again = engine()
    assert again.apply_boot(text) == [] and again.config_text() == text
    ctx = eng.projection()["config"]["context"]["segw"]
    gtp = ctx["crypto-template"]["t"]["payload"]["gtp"]
    assert gtp["family"] == "ipv4" and gtp["ipsec-transform-set-list"] == ["esp-gcm", "esp-cbc"]
    (tsi,) = gtp["tsi"].values()
    assert tsi == {"start": "198.51.100.66", "end": "198.51.100.66", "protocol": 17,
                   "ports": [100, 100]}  # fmt: skip
    assert gtp["lifetime"] == 7200 and gtp["rekey"] is True
    assert list(ctx["crypto-template"]["t"]["payload"]) == ["gtp", "oam"]  # configuration order
    cmap = ctx["crypto-map"]["to-core"]
    assert cmap["family"] == "ipv6" and cmap["peer"] == {"address": "fd00::1", "port": 4500}
    assert cmap["bind"] == {"address": "::1", "port": 5600}
    assert ctx["ipsec-transform-set"]["esp-cbc"]["group"] == "19"


def session_in(*lines):
    s = engine().new_session()
    for line in ("configure", "context segw", *lines):
        res = s.execute(line)
        assert not res.error, (line, res.output)
    return s


def test_overlapping_payloads_are_refused():
    s = session_in(
        "crypto template t ikev2-dynamic",
        "payload a match childsa match ipv4",
        "tsr start-address 10.0.0.0 end-address 10.255.255.255",
        "exit",
        "payload b match childsa match ipv6",
        "exit",
        "payload c match childsa match any",
    )
    res = s.execute("tsr start-address 10.1.0.0 end-address 10.1.255.255")
    assert res.error and "payload c overlaps payload a" in res.output
    assert "tsr" not in s.engine.projection()["config"]["context"]["segw"]["crypto-template"][
        "t"]["payload"]["c"]  # fmt: skip
    assert not s.execute("tsr start-address 172.16.0.0 end-address 172.16.255.255").error
    s.execute("exit")
    s.execute("payload d match childsa match ipv6")
    res = s.execute("tsi start-address fd00::1 end-address fd00::1")
    assert res.error and "payload d overlaps payload b" in res.output  # b: all of IPv6
    res = s.execute("tsi start-address 10.0.0.1 end-address 10.0.0.1")
    assert res.error and "IPv4 selector in a payload that matches ipv6" in res.output
    res = s.execute("tsr start-address fd00::9 end-address fd00::1")
    assert res.error and "is after" in res.output


def test_disjoint_ports_make_disjoint_payloads():
    s = session_in("crypto template t ikev2-dynamic", "payload a match childsa match ipv4",
                   "tsi start-address 198.51.100.66 end-address 198.51.100.66 protocol 17 start-port 100 end-port 100",
                   "exit", "payload b match childsa match ipv4",
                   "tsi start-address 198.51.100.66 end-address 198.51.100.66 protocol 17 start-port 200 end-port 200",
                   "exit")  # fmt: skip
    s.execute("payload c match childsa match ipv4")
    res = s.execute("tsi start-address 198.51.100.0 end-address 198.51.100.255 protocol 17")
    assert res.error and "overlaps payload a" in res.output
    # TCP on the same addresses does not overlap UDP
    assert not s.execute(
        "tsi start-address 198.51.100.0 end-address 198.51.100.255 protocol 6"
    ).error


def test_at_most_five_payloads_and_four_ipsec_transform_sets():
    lines = ["crypto template t ikev2-dynamic"]
    for i in range(5):
        lines += [f"payload p{i} match childsa match ipv4",
                  f"tsr start-address 10.0.{i}.0 end-address 10.0.{i}.255", "exit"]  # fmt: skip
    s = session_in(*lines)
    res = s.execute("payload p5 match childsa match ipv6")
    assert res.error and "at most 5 payloads" in res.output
    s.execute("payload p0 match childsa match ipv4")
    res = s.execute("ipsec transform-set list a b c d e")
    assert res.error and "at most 4" in res.output


def test_crypto_map_checks_its_addresses():
    s = session_in(
        "wsg-service svc",
        "exit",
        "crypto template t ikev2-dynamic",
        "exit",
        "wsg-service svc",
        "bind address 127.0.0.1 port 5500 crypto-template t",
        "exit",
        "crypto map m ikev2-ipv4",
    )
    assert s.prompt.endswith("(cfg-crypto-ikev2-ipv4-map)#")
    res = s.execute("peer ::1")
    assert res.error and "not an ipv4 address" in res.output
    res = s.execute("bind address 127.0.0.1 port 5500")
    assert res.error and "already bound by wsg-service svc" in res.output
    assert not s.execute("bind address 127.0.0.1 port 5501").error
    s.execute("payload p match ipv4")
    assert s.prompt.endswith("(cfg-crypto-ikev2-ipv4-payload)#")
    s.execute("exit")
    s.execute("exit")
    res = s.execute("crypto map m ikev2-ipv6")
    assert res.error and "remove it first" in res.output
    s.execute("wsg-service svc2")
    res = s.execute("bind address 127.0.0.1 port 5501 crypto-template t")
    assert res.error and "already bound by crypto-map m" in res.output


def test_pools_for_the_service():
    s = session_in(
        "ip pool enb4 10.8.0.0 255.255.0.0",
        "ipv6 pool enb6 prefix 2001:db8:8::/48",
        "crypto template t ikev2-dynamic",
        "exit",
        "wsg-service svc",
        "ip address pool name enb4",
        "ip address pool name enb6",
    )
    res = s.execute("ip address pool name nope")
    assert res.error and "ip pool nope is not configured" in res.output
    svc = s.engine.projection()["config"]["context"]["segw"]["wsg-service"]["svc"]
    assert list(svc["ip-address-pool"].values()) == ["enb4", "enb6"]
    s.execute("exit")
    res = s.execute("ipv6 pool bad prefix 10.0.0.0/8")
    assert res.error and "not an IPv6 prefix" in res.output
    res = s.execute("ipv6 pool bad prefix 2001:db8::1/48")
    assert res.error and "invalid prefix" in res.output
