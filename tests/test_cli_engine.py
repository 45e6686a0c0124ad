"""CLI engine: modes and prompts, show commands, running config, boot configuration."""

import json
from datetime import UTC, datetime

import pytest

from supervisor.cli import BootError, CommandFailure, Engine


class FakeSystem:
    def __init__(self, platform="asr5500", cards=None):
        self.platform = platform
        self.cards = cards if cards is not None else ASR5500_CARDS
        self.reboots = []

    def card_table(self):
        return self.cards

    def card_reboot(self, slot, force):
        if slot not in {c["slot"] for c in self.cards}:
            raise CommandFailure(f"Card {slot} is not present")
        self.reboots.append((slot, force))
        return f"Info: card {slot} is rebooting"

    def version(self):
        return {
            "image_version": "21.28.0-sim",
            "build": "71234",
            "description": "Simulator_Build",
            "date": "Tue Mar  5 17:13:14 UTC 2024",
            "boot_image": "/flash/asr5500-21.28.0-sim.bin",
            "commit": "0123abcd",
        }


ASR5500_CARDS = [
    {
        "slot": 1,
        "type": "dpc",
        "label": "DPC",
        "role": "active",
        "state": "active",
        "pid": 101,
        "uptime_s": 1.5,
        "spof": False,
    },
    {
        "slot": 4,
        "type": "dpc",
        "label": "DPC",
        "role": "standby",
        "state": "active",
        "pid": 104,
        "uptime_s": 1.5,
        "spof": None,
    },
    {
        "slot": 5,
        "type": "mio",
        "label": "MMIO",
        "role": "active",
        "state": "active",
        "pid": 105,
        "uptime_s": 9.0,
        "spof": False,
    },
]


@pytest.fixture
def system():
    return FakeSystem()


@pytest.fixture
def engine(system):
    return Engine(system)


@pytest.fixture
def session(engine):
    return engine.new_session()


def run(session, *lines):
    out = []
    for line in lines:
        res = session.execute(line)
        assert not res.error, (line, res.output)
        out.append(res)
    return out[-1] if out else None


# ---- modes and prompts -------------------------------------------------------------------


def test_prompts_in_each_mode(session):
    assert session.prompt == "[local]asr5500#"
    run(session, "configure")
    assert session.prompt == "[local]asr5500(config)#"
    run(session, "context ISP1")
    assert session.prompt == "[ISP1]asr5500(config-ctx)#"
    run(session, "interface mgmt")
    assert session.prompt == "[ISP1]asr5500(config-if-eth)#"
    run(session, "exit")
    assert session.prompt == "[ISP1]asr5500(config-ctx)#"
    run(session, "interface mgmt", "end")
    assert session.prompt == "[local]asr5500#"  # the exec context did not change


def test_exit_climbs_one_mode_and_closes_from_exec(session):
    run(session, "config", "context c", "interface i", "exit", "exit")
    assert session.mode == "config"
    res = run(session, "exit")
    assert session.mode == "exec" and not res.close
    res = session.execute("exit")
    assert res.close and not res.error and session.closed
    assert session.execute("show version").error


def test_end_in_exec_is_a_noop(session):
    res = run(session, "end")
    assert res.output == "" and not res.close and session.mode == "exec"


def test_hostname_changes_prompt_and_is_configuration(engine, session):
    run(session, "config", "system hostname segw-lab-1")
    assert session.prompt == "[local]segw-lab-1(config)#"
    other = engine.new_session()
    assert other.prompt == "[local]segw-lab-1#"
    assert engine.config_text().splitlines()[1] == "  system hostname segw-lab-1"
    run(session, "no system hostname")
    assert session.prompt == "[local]asr5500(config)#"


def test_engine_hostname_argument_and_asr9000_default():
    assert Engine(FakeSystem("asr9000")).new_session().prompt == "[local]asr9000#"
    engine = Engine(FakeSystem(), hostname="gw1")
    assert engine.new_session().prompt == "[local]gw1#"
    assert "system hostname gw1" in engine.config_text()
    assert engine.version == 0


def test_exec_context_switch(engine, session):
    res = session.execute("context ISP1")
    assert res.error and res.output == "Failure: context ISP1 does not exist"
    run(session, "config", "context ISP1", "end", "context ISP1")
    assert session.prompt == "[ISP1]asr5500#"
    run(session, "config")
    assert session.prompt == "[ISP1]asr5500(config)#"
    run(session, "no context ISP1", "end")
    assert session.prompt == "[local]asr5500#"  # its context is gone


def test_local_context_cannot_be_removed(session):
    run(session, "config")
    res = session.execute("no context local")
    assert res.error and res.output.startswith("Failure: ")


def test_session_inside_a_removed_block_falls_back(engine):
    a, b = engine.new_session(), engine.new_session()
    run(a, "config", "context c1", "interface i1")
    run(b, "config", "no context c1")
    assert a.prompt == "[local]asr5500(config)#"
    assert a.execute("description x").error  # no longer in the interface


def test_remarks_and_hash_exit(session):
    assert run(session, "# a remark", "   #another", "").output == ""
    run(session, "config", "context c", "#exit")
    assert session.mode == "config"


def test_terminal_settings_are_accepted(session):
    run(session, "terminal length 0", "terminal width 512")
    assert (session.terminal_length, session.terminal_width) == (0, 512)


def test_timestamps_off_by_default_and_switchable(engine):
    now = datetime(2024, 3, 5, 17, 13, 14, tzinfo=UTC)
    s = engine.new_session(now=lambda: now)
    assert run(s, "show version").output.startswith("Active Software:")
    res = run(s, "timestamps")
    assert res.output == "Tuesday March 05 17:13:14 UTC 2024"
    lines = run(s, "show version").output.splitlines()
    assert lines[:2] == ["Tuesday March 05 17:13:14 UTC 2024", "Active Software:"]
    run(s, "no timestamps")
    assert run(s, "show version").output.startswith("Active Software:")


# ---- show commands -----------------------------------------------------------------------

CARD_TABLE = """\
Slot         Card Type                               Oper State     SPOF  Tunnels  Attach
-----------  --------------------------------------  -------------  ----  -------  ------
 1: DPC      Data Processing Card 2                  Active         No
 4: DPC      Data Processing Card 2                  Standby        -
 5: MMIO     Management & 20x10Gb I/O Card           Active         No"""


def test_show_card_table_asr5500(session):
    res = run(session, "show card table")
    assert res.output == CARD_TABLE
    assert [c["slot"] for c in res.data["cards"]] == [1, 4, 5]
    assert res.data["cards"][1]["oper_state"] == "Standby"
    json.dumps(res.data)


def test_show_card_table_asr9000_states():
    cards = [
        {
            "slot": 0,
            "type": "rsp",
            "label": "RSP",
            "role": "active",
            "state": "active",
            "spof": True,
        },
        {"slot": 1, "type": "vsm", "label": "VSM", "role": "active", "state": "booting"},
        {"slot": 2, "type": "vsm", "label": "VSM", "role": "standby", "state": "active"},
        {"slot": 3, "type": "vsm", "label": "VSM", "role": "active", "state": "failed"},
        {"slot": 4, "type": "vsm", "label": "VSM", "role": "active", "state": "offline"},
        {"slot": 7, "type": None},
    ]
    out = Engine(FakeSystem("asr9000", cards)).new_session().execute("show card table").output
    rows = out.splitlines()[2:]
    assert rows[0] == " 0: RSP      Route Switch Processor                  Active         Yes"
    assert rows[1] == " 1: VSM      Virtualized Service Module              Booting        -"
    assert [r[53:68].strip() for r in rows] == [
        "Active",
        "Booting",
        "Standby",
        "Failed",
        "Offline",
        "-",
    ]
    assert rows[5] == " 7:          None                                    -              -"


def test_show_version(session):
    res = run(session, "show version")
    assert res.output.splitlines() == [
        "Active Software:",
        "  Image Version:                  21.28.0-sim",
        "  Image Build Number:             71234",
        "  Image Description:              Simulator_Build",
        "  Image Date:                     Tue Mar  5 17:13:14 UTC 2024",
        "  Boot Image:                     /flash/asr5500-21.28.0-sim.bin",
        "  Source Commit ID:               0123abcd",
    ]
    assert res.data["image_version"] == "21.28.0-sim"


def test_show_context_all(session):
    run(session, "config", "context ISP1", "end")
    res = run(session, "show context all")
    assert res.output.splitlines() == [
        "Context Name    ContextID    State     Description",
        "--------------- --------- ----------   -----------------------",
        "local           1            Active",
        "ISP1            2            Active",
    ]
    assert [c["name"] for c in res.data["contexts"]] == ["local", "ISP1"]


def test_card_reboot_confirmation(system, session):
    run(session, "card reboot 1")
    assert session.prompt == "Are you sure? [Yes|No]:" and system.reboots == []
    run(session, "no")
    assert system.reboots == [] and session.prompt == "[local]asr5500#"
    run(session, "card reboot 1")
    assert run(session, "yes").output == "Info: card 1 is rebooting"
    assert system.reboots == [(1, False)]
    assert run(session, "card reboot 4 -force -noconfirm").output == "Info: card 4 is rebooting"
    assert system.reboots[-1] == (4, True)
    res = session.execute("card reboot 9 -noconfirm")
    assert res.error and res.output == "Failure: Card 9 is not present"


def test_every_show_returns_json_data(session):
    for line in (
        "show card table",
        "show version",
        "show context all",
        "show configuration",
        "show configuration errors",
        "show configuration context local errors verbose",
    ):
        res = run(session, line)
        assert res.data is not None, line
        json.dumps(res.data)
    assert run(session, "config").data is None


# ---- running configuration ---------------------------------------------------------------

CONFIG_LINES = [
    "config",
    "system hostname segw1",
    "context local",
    "interface mgmt",
    "ip address 192.168.100.1 255.255.255.0",
    'description "management \\"LAN\\" \\\\ port"',
    "end",
    "config",
    "context ISP1",
    "ip pool pool1 10.10.0.0 255.255.0.0 public 0",
    "ip pool pool2 10.20.0.0 255.255.0.0",
    "interface uplink",
    "ip address 10.0.0.2 255.255.255.252",
    "end",
]

EXPECTED_TEXT = """\
config
  system hostname segw1
  context local
    interface mgmt
      ip address 192.168.100.1 255.255.255.0
      description "management \\"LAN\\" \\\\ port"
    #exit
  #exit
  context ISP1
    ip pool pool1 10.10.0.0 255.255.0.0 public 0
    ip pool pool2 10.20.0.0 255.255.0.0
    interface uplink
      ip address 10.0.0.2 255.255.255.252
    #exit
  #exit
end"""


def test_show_configuration_shape(engine, session):
    run(session, *CONFIG_LINES)
    assert run(session, "show configuration").output == EXPECTED_TEXT
    assert engine.config_text() == EXPECTED_TEXT
    only = run(session, "show configuration context ISP1").output
    assert only.splitlines()[:2] == ["config", "  context ISP1"] and "mgmt" not in only
    assert session.execute("show configuration context nope").error


def test_show_configuration_reapplies_identically(engine, session):
    run(session, *CONFIG_LINES)
    text = engine.config_text()
    fresh = Engine(FakeSystem())
    assert fresh.apply_boot(text) == []
    assert fresh.config_text() == text
    assert fresh.projection()["config"] == engine.projection()["config"]


def test_keywords_are_stored_in_full(engine, session):
    run(
        session,
        "conf",
        "cont c1",
        "ip po p1 10.0.0.0 255.0.0.0 pri 3",
        "int i1",
        "ip addr 1.1.1.1 255.0.0.0",
    )
    text = engine.config_text()
    assert "ip pool p1 10.0.0.0 255.0.0.0 private 3" in text
    assert "interface i1" in text and "ip address 1.1.1.1 255.0.0.0" in text


def test_reissuing_a_line_replaces_it_in_place(engine, session):
    run(
        session,
        "config",
        "context c1",
        "ip pool a 10.1.0.0 255.255.0.0",
        "ip pool b 10.2.0.0 255.255.0.0",
        "ip pool a 10.3.0.0 255.255.0.0 public 1",
    )
    lines = engine.config_text(context="c1").splitlines()
    assert lines[2:4] == [
        "    ip pool a 10.3.0.0 255.255.0.0 public 1",
        "    ip pool b 10.2.0.0 255.255.0.0",
    ]


def test_no_forms(engine, session):
    run(session, *CONFIG_LINES)
    run(session, "config", "context local", "interface mgmt", "no description", "no ip address")
    assert "management" not in engine.config_text()
    assert engine.projection()["config"]["context"]["local"]["interface"]["mgmt"] == {}
    run(session, "exit", "no interface mgmt")
    assert "interface mgmt" not in engine.config_text()
    res = run(session, "no interface mgmt")
    assert res.output.startswith("Warning: ")
    run(session, "exit", "context ISP1", "no ip pool pool1", "exit", "no context ISP1")
    assert "ISP1" not in engine.config_text()
    assert session.execute("no ip pool").error  # wrong mode and incomplete


def test_version_counts_changes_only(engine, session):
    assert engine.version == 0
    run(session, "config", "context c1")
    v = engine.version
    assert v == 1
    run(session, "ip pool p 10.0.0.0 255.0.0.0")
    assert engine.version == v + 1
    run(session, "ip pool p 10.0.0.0 255.0.0.0", "exit", "context c1")
    assert engine.version == v + 1  # same line again, re-entering: no change
    session.execute("context bad name")  # parse error
    session.execute("no context local")  # failure
    assert engine.version == v + 1


def test_projection_is_json_and_structured(engine, session):
    run(session, *CONFIG_LINES)
    proj = engine.projection()
    json.dumps(proj)
    assert proj["version"] == engine.version and proj["hostname"] == "segw1"
    isp1 = proj["config"]["context"]["ISP1"]
    assert isp1["ip-pool"]["pool1"] == {
        "name": "pool1",
        "address": "10.10.0.0",
        "mask": "255.255.0.0",
        "scope": "public",
        "priority": 0,
    }
    assert isp1["interface"]["uplink"]["ip-address"] == {
        "address": "10.0.0.2",
        "mask": "255.255.255.252",
    }


# ---- boot configuration ------------------------------------------------------------------

BOOT = """\
config
  system hostname segw1
  context local
    interface mgmt
      ip address 192.168.100.1 255.255.255.0
    #exit
  #exit
  context ISP1
    interface good
      ip address 10.0.0.1 255.255.255.0
    #exit
    interface broken
      description "kept but out of service"
      ip adress 10.0.1.1 255.255.255.0
    #exit
    ip pool pool1 10.9.0.0 255.255.0.0 public 0
  #exit
end
"""


def test_boot_with_a_bad_line_applies_the_rest(engine):
    errors = engine.apply_boot(BOOT)
    assert errors == [
        BootError(
            14, "ip adress 10.0.1.1 255.255.255.0", "Invalid input detected at '^' marker.", 9
        ),
    ]
    proj = engine.projection()["config"]
    isp1 = proj["context"]["ISP1"]
    assert set(isp1["interface"]) == {"good"}  # the broken interface is out of service
    assert "pool1" in isp1["ip-pool"]  # lines after the bad block still applied
    assert proj["context"]["local"]["interface"]["mgmt"]["ip-address"]["address"]
    text = engine.config_text()
    assert "interface broken" in text and "kept but out of service" in text
    assert "adress" not in text
    assert engine.new_session().prompt == "[local]segw1#"


def test_show_configuration_errors_lists_the_bad_block(engine):
    engine.apply_boot(BOOT)
    s = engine.new_session()
    res = run(s, "show configuration errors")
    lines = res.output.splitlines()
    assert lines[0] == "#" * 86
    assert lines[1] == "#                   Displaying Global configuration errors"
    assert lines[2] == "#" * 86
    assert lines[3].startswith("Error   : context ISP1, interface broken: line 14: ip adress")
    assert "Total 1 error(s) in this section !" in lines
    assert lines[-1] == "Total 0 warning(s) in this section!"
    assert res.data["total"] == 1 and res.data["errors"][0]["line_no"] == 14
    verbose = run(s, "show configuration errors verbose").output
    assert "Info    : context ISP1, interface broken is out of service" in verbose
    assert run(s, "show configuration context local errors").data["total"] == 0


def test_fixing_an_errored_block_brings_it_into_service(engine):
    engine.apply_boot(BOOT)
    s = engine.new_session()
    run(s, "config", "context ISP1", "interface broken")
    assert "broken" not in engine.projection()["config"]["context"]["ISP1"]["interface"]
    run(s, "ip address 10.0.1.1 255.255.255.0", "end")
    iface = engine.projection()["config"]["context"]["ISP1"]["interface"]["broken"]
    assert iface["ip-address"]["address"] == "10.0.1.1"
    assert run(s, "show configuration errors").data["total"] == 0


def test_removing_an_errored_block_clears_its_error(engine):
    engine.apply_boot(BOOT)
    s = engine.new_session()
    run(s, "config", "context ISP1", "no interface broken")
    assert run(s, "end", "show configuration errors").data["total"] == 0


def test_a_bad_block_header_skips_its_body(engine):
    long_name = "x" * 80
    text = f"""\
config
  context ISP2
    interface {long_name}
      ip address 10.0.0.1 255.255.255.0
      description "would land in the context otherwise"
    #exit
    ip pool p 10.1.0.0 255.255.0.0
  #exit
  context ISP3
  #exit
end
"""
    errors = engine.apply_boot(text)
    assert [e.line_no for e in errors] == [3]
    assert "3 nested line(s) skipped" in errors[0].message
    proj = engine.projection()["config"]["context"]
    assert "ISP2" not in proj and "ISP3" in proj  # the context holding the bad line is out
    assert "ip pool p 10.1.0.0" in engine.config_text()
    assert run(engine.new_session(), "show context all").data["contexts"][1]["state"] == "Inactive"


def test_boot_failures_and_global_errors(engine):
    text = (
        "config\n  context ISP1\n    ip pool p 10.0.0.0 255.0.255.0\n  #exit\n  bogus line\nend\n"
    )
    errors = engine.apply_boot(text)
    assert [(e.line_no, e.message) for e in errors] == [
        (3, "Failure: 255.0.255.0 is not a valid subnet mask"),
        (5, "Invalid input detected at '^' marker."),
    ]
    assert "ISP1" not in engine.projection()["config"]["context"]
    out = run(engine.new_session(), "show configuration errors").output
    assert "Error   : global: line 5: bogus line:" in out


def test_boot_needs_noconfirm_for_confirming_commands(engine, system):
    errors = engine.apply_boot("card reboot 1\ncard reboot 4 -noconfirm\n")
    assert [e.line_no for e in errors] == [1] and system.reboots == [(4, False)]


def test_boot_can_be_read_back_after_errors(engine):
    engine.apply_boot(BOOT)
    fresh = Engine(FakeSystem())
    assert fresh.apply_boot(engine.config_text()) == []
    assert fresh.config_text() == engine.config_text()


def test_question_mark_is_literal_in_a_boot_file(engine):
    text = "config\n  context c1\n    interface i1\n      description what?\n"
    assert engine.apply_boot(text) == []
    assert 'description "what?"' in engine.config_text()
    iface = engine.projection()["config"]["context"]["c1"]["interface"]["i1"]
    assert iface["description"] == "what?"


def test_boot_without_indentation_still_applies(engine):
    flat = "config\ncontext c1\ninterface i1\nip address 10.0.0.1 255.0.0.0\n#exit\n#exit\nend\n"
    assert engine.apply_boot(flat) == []
    assert "ip-address" in engine.projection()["config"]["context"]["c1"]["interface"]["i1"]
