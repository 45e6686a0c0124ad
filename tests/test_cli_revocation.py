"""Revocation commands: `ca-crl name`, `ca-crl list`, `ocsp [nonce]`, `revocation setup-timer`,
`show ca-crl`: grammar, checks, the projection the cards read, the round trip."""

from test_cli_fuzz import FakeSystem

from cards.gateway import revocation_policy
from supervisor.cli import Engine
from supervisor.ike import commands as ike
from supervisor.pki import crl_commands

CONFIG = """\
config
  ca-crl name root-crl der url http://127.0.0.1:8080/root.crl
  ca-crl name sub-crl pem url ldap://127.0.0.1:3389/cn=Sub,o=Lab refresh-interval 15
  context segw
    crypto template segw-tmpl ikev2-dynamic
      certificate name segw
      ocsp nonce
      ocsp responder-address http://127.0.0.1:8888/
      ca-crl list ca-crl-name root-crl ca-crl-name sub-crl
      revocation setup-timer 3
    #exit
  #exit
end
"""


class System(FakeSystem):
    def __init__(self, rows=()):
        self.rows = list(rows)

    def crl_report(self, name):
        return [r for r in self.rows if name is None or r["name"] == name]


def engine(system=None):
    return Engine(system or System(), plugins=[ike.register, crl_commands.register])


def session(eng, *lines):
    s = eng.new_session()
    for line in lines:
        res = s.execute(line)
        assert not res.error, (line, res.output)
    return s


def test_the_configuration_round_trips_and_reaches_the_cards_projection():
    eng = engine()
    assert eng.apply_boot(CONFIG) == []
    text = eng.config_text()
    again = engine()
    assert again.apply_boot(text) == [] and again.config_text() == text
    tree = eng.projection()["config"]
    assert tree["ca-crl"]["root-crl"] == {
        "encoding": "der",
        "url": "http://127.0.0.1:8080/root.crl",
        "refresh-interval": 60,
    }
    assert tree["ca-crl"]["sub-crl"]["refresh-interval"] == 15
    block = tree["context"]["segw"]["crypto-template"]["segw-tmpl"]
    policy = revocation_policy(block)
    assert policy.ocsp and policy.nonce and policy.responder == "http://127.0.0.1:8888/"
    assert policy.crls == ("root-crl", "sub-crl") and policy.timeout_s == 3


def test_no_revocation_lines_no_policy():
    assert revocation_policy({"certificate": "segw"}) is None


def test_a_crl_list_names_only_configured_crls():
    s = session(engine(), "config", "context segw", "crypto template t ikev2-dynamic")
    res = s.execute("ca-crl list ca-crl-name nowhere")
    assert res.error and "ca-crl nowhere is not configured" in res.output
    assert s.execute("ca-crl list ca-crl-name a ca-crl-name a").error


def test_a_crl_in_use_cannot_be_removed():
    eng = engine()
    assert eng.apply_boot(CONFIG) == []
    s = session(eng, "config")
    res = s.execute("no ca-crl name root-crl")
    assert res.error and "in use by crypto-template segw-tmpl" in res.output
    session(eng, "config", "context segw", "crypto template segw-tmpl ikev2-dynamic", "no ca-crl")
    assert not s.execute("no ca-crl name root-crl").error
    assert "root-crl" not in eng.projection()["config"]["ca-crl"]


def test_the_revocation_timer_fits_in_the_setup_timer():
    s = session(engine(), "config", "context segw", "crypto template t ikev2-dynamic")
    assert s.execute("revocation setup-timer 11").error  # the range: 1-10
    assert not s.execute("revocation setup-timer 10").error  # 2 x 10 < 30 (the default)
    assert not s.execute("ikev2-ikesa setup-timer 10").error
    res = s.execute("revocation setup-timer 5")
    assert res.error and "at most 4 s" in res.output


def test_wrong_words_and_urls_are_named():
    s = session(engine(), "config")
    assert s.execute("ca-crl name x xml url http://a/b").error
    assert s.execute("ca-crl name x der url").error
    assert s.execute("ca-crl name x der url http://a/b refresh-interval 0").error
    s = session(engine(), "config", "context segw", "crypto template t ikev2-dynamic")
    assert s.execute("ocsp nonces").error
    assert not s.execute("ocsp").error and not s.execute("no ocsp").error


def test_show_ca_crl():
    row = {
        "name": "root-crl", "url": "http://127.0.0.1:8080/root.crl", "issuer": "CN=Lab Root",
        "this_update": 1780315200.0, "next_update": 1780318800.0, "number": 4, "count": 2,
        "version": 3, "last_fetch": 1780315260.0, "last_result": "ok",
        "next_fetch": 1780318800.0, "cards": {1: "v3", 2: "pending"},
    }  # fmt: skip
    s = engine(System([row])).new_session()
    res = s.execute("show ca-crl all")
    assert not res.error
    for text in ("CRL name: root-crl", "CN=Lab Root", "Entries      : 2", "1: v3, 2: pending",
                 "2026-06-01 12:00:00 UTC", "Last fetch"):  # fmt: skip
        assert text in res.output, res.output
    assert res.data["items"][0]["count"] == 2
    assert s.execute("show ca-crl name root-crl").output == res.output
    res = s.execute("show ca-crl name other")
    assert res.error and "ca-crl other is not configured" in res.output
