"""Property tests: the CLI engine never raises on any input, and configuration round-trips."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.cli import Engine, Result


class FakeSystem:
    platform = "asr5500"

    def card_table(self):
        return [{"slot": 1, "type": "dpc", "label": "DPC", "role": "active", "state": "active"}]

    def card_reboot(self, slot, force):
        return "Info: rebooting"

    def version(self):
        return {"image_version": "21.28.0-sim"}


ENTER = {
    "exec": [],
    "config": ["config"],
    "config-ctx": ["config", "context c1"],
    "config-if-eth": ["config", "context c1", "interface i1"],
}

WORDS = [
    "show",
    "sh",
    "card",
    "table",
    "configuration",
    "conf",
    "config",
    "context",
    "c1",
    "local",
    "errors",
    "verbose",
    "version",
    "no",
    "ip",
    "pool",
    "address",
    "interface",
    "i1",
    "exit",
    "end",
    "description",
    "system",
    "hostname",
    "public",
    "private",
    "reboot",
    "-force",
    "-noconfirm",
    "timestamps",
    "terminal",
    "length",
    "width",
    "1",
    "18",
    "99",
    "-1",
    "10.0.0.1",
    "255.255.0.0",
    "::1",
    '"',
    '"quoted words"',
    "?",
    "#",
    "#exit",
    "x" * 300,
    "\t",
    "\\",
    "@",
    "{",
    "[",
    "...",
]

cli_lines = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join),
    st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join).map(lambda s: s + " "),
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mode=st.sampled_from(sorted(ENTER)), lines=st.lists(cli_lines, min_size=1, max_size=6))
def test_any_input_never_raises(mode, lines):
    engine = Engine(FakeSystem())
    session = engine.new_session()
    for line in ENTER[mode]:
        assert not session.execute(line).error
    for line in lines:
        completions = session.complete(line)
        assert isinstance(completions, list) and all(isinstance(c, str) for c in completions)
        items = session.help(line)
        assert all(isinstance(w, str) and isinstance(h, str) for w, h in items)
        res = session.execute(line)
        assert isinstance(res, Result) and isinstance(res.output, str)
        assert "internal error" not in res.output  # the safety net must stay unused
        assert isinstance(session.prompt, str)
    engine.config_text()
    engine.projection()


@FUZZ
@given(text=st.text(max_size=400))
def test_any_boot_text_never_raises(text):
    engine = Engine(FakeSystem())
    errors = engine.apply_boot(text)
    assert all(1 <= e.line_no <= max(1, len(text.splitlines())) for e in errors)
    engine.projection()


printable = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Co", "Cn")),
    min_size=1,
    max_size=79,
).filter(str.isprintable)


@FUZZ
@given(
    description=printable, hostname=printable.filter(lambda s: '"' not in s and s.split() == [s])
)
def test_quoted_values_round_trip_through_show_configuration(description, hostname):
    from supervisor.cli.tokens import quote

    engine = Engine(FakeSystem())
    s = engine.new_session()
    for line in (
        "config",
        f"system hostname {quote(hostname[:63])}",
        "context c1",
        "interface i1",
        f"description {quote(description)}",
        "end",
    ):
        res = s.execute(line)
        assert not res.error, (line, res.output)
    text = engine.config_text()
    fresh = Engine(FakeSystem())
    assert fresh.apply_boot(text) == []
    assert fresh.config_text() == text
    iface = fresh.projection()["config"]["context"]["c1"]["interface"]["i1"]
    assert iface["description"] == description
