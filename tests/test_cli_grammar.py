"""CLI grammar: abbreviations, caret errors, typed arguments, help, completion, extensions."""

import pytest

from supervisor.cli import (
    CommandFailure,
    Engine,
    EnterBlock,
    GrammarError,
    Result,
    SetLine,
)
from supervisor.cli.argtypes import ArgError, ArgType


class FakeSystem:
    platform = "asr5500"

    def card_table(self):
        return []

    def card_reboot(self, slot, force):
        return f"Info: card {slot} reboot"

    def version(self):
        return {"image_version": "21.28.0-sim"}


@pytest.fixture
def engine():
    return Engine(FakeSystem())


@pytest.fixture
def session(engine):
    return engine.new_session()


def in_mode(session, *lines):
    for line in lines:
        res = session.execute(line)
        assert not res.error, (line, res.output)
    return session


def caret(res):
    """(echoed line, caret column, message) of a parse error."""
    echoed, marker, message = res.output.split("\n")
    assert marker.strip() == "^"
    return echoed, marker.index("^"), message


# ---- abbreviations and parse errors ------------------------------------------------------


def test_unique_prefixes_are_accepted(session):
    res = session.execute("sh card tab")
    assert not res.error and res.output.startswith("Slot")
    assert session.execute("SHOW VERSION").output.startswith("Active Software:")


def test_conf_and_config_enter_configuration(session):
    assert not session.execute("conf").error
    assert session.prompt == "[local]asr5500(config)#"
    session.execute("end")
    assert not session.execute("config").error
    assert session.mode == "config"


@pytest.mark.parametrize(
    "line, column",
    [
        ("show crad table", 5),
        ("  show card tabel", 12),
        ("show card table extra", 16),
        ("card reboot 19", 12),
        ("card reboot -1", 12),
        ("card reboot one", 12),
        ("terminal width 79", 15),
        ("bogus", 0),
    ],
)
def test_invalid_input_caret_is_under_the_bad_word(session, line, column):
    res = session.execute(line)
    assert res.error
    echoed, col, message = caret(res)
    assert echoed == line
    assert col == column
    assert message == "Invalid input detected at '^' marker."


def test_ambiguous_abbreviation(session):
    res = session.execute("sh c table")
    assert res.error
    _, col, message = caret(res)
    assert col == 3 and message == "Ambiguous command at '^' marker."
    assert session.execute("co").error  # configure / context


def test_incomplete_command(session):
    for line in ("show", "show card", "card reboot", "terminal"):
        res = session.execute(line)
        assert res.error and res.output == "Incomplete command."


def test_unterminated_quote(session):
    in_mode(session, "config", "context c1", "interface i1")
    res = session.execute('description "no end')
    assert res.error
    _, col, message = caret(res)
    assert col == 12 and message.startswith("Unterminated quoted string")


def test_command_from_another_mode_is_invalid(session):
    assert session.execute("interface x").error
    in_mode(session, "config")
    assert session.execute("show card table").error
    assert session.execute("ip address 1.1.1.1 255.0.0.0").error


# ---- typed arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, ok",
    [
        ("ip address 10.0.0.1 255.255.255.0", True),
        ("ip address 10.0.0.256 255.255.255.0", False),
        ("ip address 10.0.0 255.255.255.0", False),
        ("ip address 010.0.0.1 255.255.255.0", False),
        ("ip address 2001:db8::1 255.255.255.0", False),
        ("description " + "x" * 79, True),
        ("description " + "x" * 80, False),
        ('description "two words"', True),
        ('description ""', False),
    ],
)
def test_interface_argument_validation(session, line, ok):
    in_mode(session, "config", "context c1", "interface i1")
    assert session.execute(line).error is not ok


def test_int_range_bounds(session):
    assert not session.execute("card reboot 0 -noconfirm").error
    assert not session.execute("card reboot 18 -noconfirm").error
    assert session.execute("card reboot 19 -noconfirm").error
    assert not session.execute("terminal length 0").error
    assert not session.execute("terminal length 512").error
    assert session.execute("terminal length 513").error


def test_name_rejects_spaces_and_length(session):
    in_mode(session, "config")
    assert session.execute('context "a b"').error
    assert session.execute("context " + "c" * 80).error
    assert not session.execute("context " + "c" * 79).error


def test_ip_pool_options_and_mask_check(session):
    in_mode(session, "config", "context c1")
    assert not session.execute("ip pool p1 10.1.0.0 255.255.0.0").error
    assert not session.execute("ip pool p2 10.2.0.0 255.255.0.0 private 10").error
    assert session.execute("ip pool p3 10.3.0.0 255.255.0.0 public 11").error
    assert session.execute("ip pool p3 10.3.0.0 255.255.0.0 public").error  # needs priority
    res = session.execute("ip pool p3 10.3.0.0 255.0.255.0")
    assert res.error and res.output == "Failure: 255.0.255.0 is not a valid subnet mask"


# ---- help (?) and completion -------------------------------------------------------------


def words(items):
    return [w for w, _ in items]


def test_help_lists_next_words_with_text(session):
    items = session.help("show ")
    assert words(items) == ["card", "configuration", "context", "version"]
    assert dict(items)["card"] == "Displays card information"
    assert session.help("show card table ") == [("<cr>", "")]
    assert words(session.help("show configuration ")) == ["context", "errors", "<cr>"]
    assert words(session.help("sh")) == ["show"]


def test_help_for_arguments_shows_type(session):
    (word, text), *_ = session.help("card reboot ")
    assert word == "<slot>" and "<0-18>" in text
    assert words(session.help("card reboot 3 ")) == ["-force", "-noconfirm", "<cr>"]
    in_mode(session, "config", "context c1")
    assert words(session.help("ip pool p 10.0.0.0 255.0.0.0 ")) == ["private", "public", "<cr>"]
    assert "<1-31 chars" in dict(session.help("ip pool "))["<name>"]


def test_help_per_mode(session):
    exec_words = words(session.help(""))
    assert {"configure", "context", "show", "card", "exit"} <= set(exec_words)
    assert "config" not in exec_words  # hidden alias
    in_mode(session, "config")
    assert words(session.help("")) == ["context", "end", "exit", "no", "system"]
    in_mode(session, "context c1")
    assert words(session.help("no ")) == ["interface", "ip"]
    in_mode(session, "interface i1")
    assert words(session.help("")) == ["description", "end", "exit", "ip", "no"]


def test_help_after_invalid_prefix_is_empty(session):
    assert session.help("show crad ") == []


def test_question_mark_executes_as_help(session):
    res = session.execute("show ?")
    assert not res.error
    assert res.output.splitlines()[0] == "  card                 - Displays card information"
    res = session.execute("show card table ?")
    assert res.output == "  <cr>"
    res = session.execute("show crad ?")
    assert res.error and caret(res)[1] == 5


def test_completion(session):
    assert session.complete("sh ca") == ["card"]
    assert session.complete("sh c") == ["card", "configuration", "context"]
    assert session.complete("conf") == ["configure"]
    assert session.complete("sh card t") == ["table"]
    assert session.complete("show ") == ["card", "configuration", "context", "version"]
    assert session.complete("sh crad t") == []
    assert session.complete("card reboot ") == []  # arguments are not completed
    in_mode(session, "config", "context c1")
    assert session.complete("") == ["end", "exit", "interface", "ip", "no"]
    assert session.complete("no i") == ["interface", "ip"]
    in_mode(session, "interface i1")
    assert session.complete('description "abc') == []
    assert session.complete("desc") == ["description"]


# ---- extending the grammar from another module -------------------------------------------


def _pem(params):
    def parse(tok):
        if not tok.text.startswith("-----BEGIN"):
            raise ArgError("not PEM")
        return tok.text

    return ArgType("PEM", "<PEM text in double quotes>", parse)


def register_pki(g):
    g.register_type("PEM", _pem)
    g.command(
        "config",
        "certificate name <name:NAME(1-129)> { der url <der_url:URL> | pem { data <pem:PEM> |"
        " url <pem_url:URL> } private-key pem { [ encrypted ] data <key:PEM> | url <key_url:URL> } }",
        SetLine(
            "certificate", "name", secret=True, display=lambda a: f"certificate name {a['name']}"
        ),
        no="certificate name <name:NAME(1-129)>",
        help={"certificate": "Configures a certificate"},
    )
    g.mode("cfg-crypto-tmpl-ikev2-tunnel", "cfg-crypto-tmpl-ikev2-tunnel", "config-ctx")
    g.command(
        "config-ctx",
        "crypto template <name:NAME(1-127)> ikev2-dynamic",
        EnterBlock("crypto-template", "name", "cfg-crypto-tmpl-ikev2-tunnel"),
        no="crypto template <name:NAME(1-127)>",
    )
    g.command(
        "cfg-crypto-tmpl-ikev2-tunnel",
        "ca-certificate list ca-cert-name <ca:NAME(1-129)> [ ca-cert-name <ca:NAME(1-129)> ]...",
        SetLine("ca-certificate-list", data=lambda a: a["ca"]),
        no="ca-certificate",
    )
    g.command(
        "cfg-crypto-tmpl-ikev2-tunnel",
        "peer <address:IPADDR> [ port <port:INT(1-65535)> ]",
        SetLine("peer", "address"),
        no="peer <address:IPADDR>",
    )


PEM = '"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----"'
KEY = '"-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----"'


def test_plugin_commands_modes_types_and_secrets():
    engine = Engine(FakeSystem(), plugins=[register_pki])
    s = in_mode(engine.new_session(), "config")
    in_mode(s, f"certificate name gw pem data {PEM} private-key pem encrypted data {KEY}")
    assert s.execute("certificate name gw2 pem data notpem private-key pem url /flash/k").error
    in_mode(s, "certificate name gw3 der url tftp://10.0.0.1/gw.der")
    assert s.execute("certificate name gw3 der url tftp://h/gw.der private-key pem url /k").error
    in_mode(s, "context c1", "crypto template t1 ikev2-dynamic")
    assert s.prompt == "[c1]asr5500(cfg-crypto-tmpl-ikev2-tunnel)#"
    in_mode(s, "ca-certificate list ca-cert-name root1 ca-cert-name int1 ca-cert-name int2")
    in_mode(s, "peer 2001:db8::1 port 500", "peer 192.0.2.1")
    assert s.execute("peer 192.0.2.300").error
    text = engine.config_text()
    assert "certificate name gw\n" in text and "BEGIN" not in text  # secret: display form only
    assert "BEGIN PRIVATE KEY" in engine.config_text(secrets=True)
    assert "ca-certificate list ca-cert-name root1 ca-cert-name int1 ca-cert-name int2" in text
    proj = engine.projection()["config"]
    assert "certificate" not in proj
    tmpl = proj["context"]["c1"]["crypto-template"]["t1"]
    assert tmpl["ca-certificate-list"] == ["root1", "int1", "int2"]
    assert tmpl["peer"]["2001:db8::1"] == {"address": "2001:db8::1", "port": 500}
    assert tmpl["peer"]["192.0.2.1"] == {"address": "192.0.2.1"}
    in_mode(
        s, "no ca-certificate", "exit", "no crypto template t1", "exit", "no certificate name gw"
    )
    assert "ca-certificate" not in engine.config_text(secrets=True)
    assert "certificate name gw " not in engine.config_text(secrets=True)


def test_labels_and_keyword_flags_reach_the_handler():
    seen = []
    engine = Engine(FakeSystem())
    engine.grammar.command(
        "exec",
        "probe { fast | slow }@speed [ -quiet ] <count:INT(1-5)>",
        lambda args, ctx: seen.append((dict(args), ctx.line)),
    )
    s = engine.new_session()
    in_mode(s, "probe sl -q 3")
    args, line = seen[0]
    assert args["speed"] == "slow" and args["-quiet"] is True and args["count"] == 3
    assert line == "probe slow -quiet 3"


def test_failing_handler_changes_nothing():
    engine = Engine(FakeSystem())

    def half_done(args, ctx):
        ctx.block.set_line("junk", None, "junk", 1)
        raise CommandFailure("second step failed")

    engine.grammar.command("config", "junk", half_done)
    s = in_mode(engine.new_session(), "config")
    before = (engine.version, engine.config_text())
    res = s.execute("junk")
    assert res.error and res.output == "Failure: second step failed"
    assert (engine.version, engine.config_text()) == before


def test_handler_bug_is_reported_not_raised():
    engine = Engine(FakeSystem())
    engine.grammar.command("exec", "crash", lambda args, ctx: 1 / 0)
    res = engine.new_session().execute("crash")
    assert res.error and res.output.startswith("Failure: internal error")


def test_handler_may_return_str_or_result():
    engine = Engine(FakeSystem())
    engine.grammar.command("exec", "hello", lambda args, ctx: "Info: hi")
    engine.grammar.command("exec", "data", lambda args, ctx: Result("x", {"a": 1}))
    s = engine.new_session()
    assert s.execute("hello").output == "Info: hi"
    assert s.execute("data").data == {"a": 1}


@pytest.mark.parametrize(
    "syntax",
    [
        "show { a | b",
        "show [ ]",
        "show <x>",
        "show <x:NOPE>",
        "show <x:INT(5-1)>",
        "Show",
        "show }",
        "show [ <x:INT> ]@lbl",
        "",
    ],
)
def test_malformed_syntax_is_rejected_at_registration(syntax):
    with pytest.raises(GrammarError):
        Engine(FakeSystem()).grammar.command("exec", syntax, lambda a, c: None)


def test_no_form_needs_a_handler():
    with pytest.raises(GrammarError):
        Engine(FakeSystem()).grammar.command("config", "foo", lambda a, c: None, no="foo")
