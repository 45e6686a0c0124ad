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
