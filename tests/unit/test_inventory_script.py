"""Inventory scripts: the TOML format, field expressions, line formats, paging and one-line errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmc.client.inventory_script import (
    FieldExpr,
    InventoryScriptError,
    LineFormat,
    Page,
    display_value,
    load_script,
    parse_field,
    parse_script,
    render,
)

NOW = datetime(2026, 11, 25, 13, 40, 1, tzinfo=UTC)
CENTOS = "CentOS release 5.5 (Final)"
MCO_SAMPLE = 'format = "%s:\\t\\t\\t%s"\nfields = ["identity", \'facts["lsbdistdescription"]\']\n'


def inv(identity: str, **facts: object) -> dict[str, object]:
    """An rpcutil inventory reply as the command hands it to render()."""
    return {"identity": identity, "agents": ["rpcutil"], "classes": ["base", "role::web"], "version": "0.1.0",
            "uptime": 42.5, "main_collective": "nmc", "collectives": ["nmc"],
            "stats": {"total": 12, "passed": 10, "filtered": 2, "replies": 10, "ttlexpired": 0},
            "facts": dict(facts)}


NODE = inv("web1.example.com", country="us", lsbdistdescription=CENTOS, **{"a.b": "literal"},
           os={"family": "RedHat", "release": {"major": "5"}}, disks=["sda", "sdb"], up=True)


# ---- field expressions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("identity", "web1.example.com"),
    ("version", "0.1.0"),
    ("uptime", 42.5),
    ("agents", ["rpcutil"]),
    ("classes[1]", "role::web"),
    ("classes[-1]", "role::web"),
    ('facts["country"]', "us"),
    ("facts['country']", "us"),
    ('facts[ "country" ]', "us"),
    ("facts.country", "us"),
    ("facts.os.family", "RedHat"),
    ('facts["os"]["release"]["major"]', "5"),
    ('facts["os"].release.major', "5"),
    ('facts["os.release.major"]', "5"),  # a quoted dotted key falls back to the path, like -F and get_fact
    ('facts["a.b"]', "literal"),  # ... but a literal key with dots wins
    ("facts.disks[0]", "sda"),
    ('stats["total"]', 12),
    ("stats.passed", 10),
    ("main_collective", "nmc"),
])
def test_field_expressions_reach_into_the_inventory(text, value):
    assert parse_field(text).evaluate(NODE) == value


@pytest.mark.parametrize("text", [
    'facts["nosuch"]', "facts.os.nosuch", "facts.country.sub", "facts.disks[5]", "classes[9]",
    'stats["nosuch"]', "identity.sub",
])
def test_missing_values_evaluate_to_none_and_render_empty(text):
    expr = parse_field(text)
    assert expr.evaluate(NODE) is None
    assert LineFormat.parse("[%s]", [text]).render(NODE) == "[]"


def test_a_node_without_a_root_evaluates_to_none():
    assert parse_field("facts.country").evaluate({"identity": "bare"}) is None


def test_quoted_keys_may_hold_any_character():
    assert parse_field(r'facts["it\"s"]') == FieldExpr('facts["it\\"s"]', "facts", ('it"s',), (True,))
    assert parse_field('facts["a]b"]').steps == ("a]b",)


@pytest.mark.parametrize(("text", "message"), [
    ("fact.country", "unknown field 'fact' in 'fact.country' (did you mean 'facts'?"),
    ("hostname", "unknown field 'hostname'"),
    ("", "must start with one of"),
    ('["x"]', "must start with one of"),
    ("facts.", "expected a name after '.'"),
    ("facts..x", "expected a name after '.'"),
    ("facts[x]", "expected a quoted key or a number after '['"),
    ('facts["x"', "expected ']'"),
    ('facts["x', "unterminated string"),
    ("facts x", "unexpected ' ' at column 6"),
    ("identity()", "unexpected '('"),
    ("__import__('os')", "unknown field '__import__'"),
])
def test_bad_field_expressions_say_what_is_wrong(text, message):
    with pytest.raises(ValueError) as err:
        parse_field(text)
    assert message in str(err.value)


@given(key=st.text(min_size=1, max_size=20), value=st.text(max_size=20))
def test_any_quoted_key_round_trips(key, value):
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    assert parse_field(f'facts["{escaped}"]').evaluate({"facts": {key: value}}) == value


def test_display_value_is_compact_json_for_structures():
    assert display_value({"b": [1, 2], "a": "x"}) == '{"a":"x","b":[1,2]}'
    assert display_value(True) == "true"
    assert display_value(None) == ""
    assert display_value(12) == "12"
    assert display_value("text") == "text"


# ---- line formats ---------------------------------------------------------------------------------------------


def test_mcollective_sample_line_shape():
    script = parse_script(MCO_SAMPLE, "inventory.toml")
    assert render(script, [inv("foobar1.example.com", lsbdistdescription=CENTOS)], NOW) == [
        "foobar1.example.com:\t\t\tCentOS release 5.5 (Final)"]


def test_nodes_are_sorted_by_identity_and_missing_facts_are_empty():
    script = parse_script(MCO_SAMPLE)
    nodes = [inv("foobar2.example.com", lsbdistdescription=CENTOS), inv("foobar3.example.com"),
             inv("foobar1.example.com", lsbdistdescription=CENTOS)]
    assert render(script, nodes, NOW) == [
        f"foobar1.example.com:\t\t\t{CENTOS}", f"foobar2.example.com:\t\t\t{CENTOS}", "foobar3.example.com:\t\t\t"]


@pytest.mark.parametrize(("template", "fields", "line"), [
    ("%s:%s", ["identity", "facts.country"], "web1.example.com:us"),
    ("%-20s|%5s|", ["identity", "facts.country"], "web1.example.com    |   us|"),
    ("%s %d%%", ["identity", "stats.total"], "web1.example.com 12%"),
    ("%s %.1f", ["identity", "uptime"], "web1.example.com 42.5"),
    ("{}:{}", ["identity", "facts.country"], "web1.example.com:us"),
    ("{1} <- {0}", ["identity", "facts.country"], "us <- web1.example.com"),
    ("{0:<18}|{1:>4}|{2:.0f}", ["identity", "facts.country", "uptime"], "web1.example.com  |  us|42"),
    ("{} {}", ["facts.os", "facts.up"], '{"family":"RedHat","release":{"major":"5"}} true'),
    ("{} {}", ["agents", "facts.nosuch"], '["rpcutil"] '),
    ("100% {}", ["identity"], "100% web1.example.com"),
])
def test_printf_and_brace_formats(template, fields, line):
    assert LineFormat.parse(template, fields).render(NODE) == line


@pytest.mark.parametrize(("template", "fields", "message"), [
    ("%s %s", ["identity"], "format takes 2 value(s) but fields lists 1"),
    ("{}", ["identity", "version"], "format takes 1 value(s) but fields lists 2"),
    ("no placeholders", ["identity"], "format takes 0 value(s) but fields lists 1"),
    ("{name}", ["identity"], "not positional"),
    ("{} {0}", ["identity"], "mixes {} and {0}-style"),
    ("{0} {2}", ["identity", "version", "uptime"], "skips position(s) [1]"),
    ("{0", ["identity"], "bad format"),
    ("%*s", ["identity"], "'*' widths are not supported"),
    ("%(x)s", ["identity"], "named %(key)s conversions"),
    ("%s", ["nosuch"], "unknown field 'nosuch'"),
])
def test_format_and_fields_must_fit(template, fields, message):
    with pytest.raises(ValueError) as err:
        LineFormat.parse(template, fields)
    assert message in str(err.value)


def test_a_value_that_does_not_fit_its_conversion_names_the_script_and_node():
    script = parse_script('format = "%s %d"\nfields = ["identity", "facts.country"]\n', "report.toml")
    with pytest.raises(InventoryScriptError) as err:
        render(script, [NODE], NOW)
    assert str(err.value).startswith("report.toml: node web1.example.com: cannot format")
    assert "\n" not in str(err.value)


# ---- paged reports --------------------------------------------------------------------------------------------

PAGED = '''
[page]
length = 2
heading = """
Node Report {time} (page {page})
Hostname:         Customer:
---------------------------------"""
body = "{0:<17} {1}"
fields = ["identity", 'facts["customer"]']
'''


def test_heading_comes_before_every_length_body_lines():
    nodes = [inv(f"node{i}.example.net", customer=c) for i, c in enumerate(["acme", "globex", "acme", "x", "y"], 1)]
    heading = ["Node Report 2026-11-25 13:40:01 +0000 (page {})", "Hostname:         Customer:",
               "---------------------------------"]
    page = [h.replace("{}", "{n}") for h in heading]
    assert render(parse_script(PAGED), nodes, NOW) == [
        *(h.format(n=1) for h in page), "node1.example.net acme", "node2.example.net globex",
        *(h.format(n=2) for h in page), "node3.example.net acme", "node4.example.net x",
        *(h.format(n=3) for h in page), "node5.example.net y",
    ]


def test_time_is_the_local_time_given():
    here = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    page = Page(body=LineFormat.parse("{}", ["identity"]), heading="at {time}", length=5)
    assert page.heading_lines(here, 1) == ["at 2026-01-02 03:04:05 +0200"]


def test_page_without_heading_or_length_prints_body_lines_only():
    script = parse_script('[page]\nbody = "{} {}"\nfields = ["identity", "facts.customer"]\n')
    assert script.page is not None and script.page.length == 60
    assert render(script, [inv("b", customer="y"), inv("a", customer="x")], NOW) == ["a x", "b y"]


def test_literal_braces_in_a_heading():
    page = Page(body=LineFormat.parse("{}", ["identity"]), heading="{{x}} {page}")
    assert page.heading_lines(NOW, 3) == ["{x} 3"]


# ---- script errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ('format = "%s\nfields = [', "TOML syntax: "),
    ('fields = ["identity"]', "format is missing (or write a [page] table)"),
    ('format = "%s"', "fields is missing"),
    ('format = "%s"\nfields = "identity"', "fields must be a list, got str"),
    ('format = "%s"\nfields = []', "fields must be a non-empty list of strings"),
    ('format = "%s"\nfields = [1]', "fields must be a non-empty list of strings"),
    ('format = 1\nfields = ["identity"]', "format must be a str, got int"),
    ('format = "%s"\nfields = ["identity"]\nformt = 1', "unknown key formt (expected fields, format, page)"),
    ('format = "%s %s"\nfields = ["identity"]', "format takes 2 value(s) but fields lists 1"),
    ('format = "%s"\nfields = ["fact.x"]', "unknown field 'fact'"),
    ('format = "%s"\nfields = ["identity"]\n[page]\nbody = "{}"\nfields = ["identity"]',
     "use either format/fields or a [page] table, not both"),
    ('page = 3', "page must be a table"),
    ('[page]\nfields = ["identity"]', "page.body is missing"),
    ('[page]\nbody = "{}"', "page.fields is missing"),
    ('[page]\nbody = "{}"\nfields = ["identity"]\nlength = 0', "page length must be at least 1"),
    ('[page]\nbody = "{}"\nfields = ["identity"]\nlength = true', "page.length must be a int, got bool"),
    ('[page]\nbody = "{}"\nfields = ["identity"]\nlength = "20"', "page.length must be a int, got str"),
    ('[page]\nbody = "{}"\nfields = ["identity"]\nheading = "{date}"', "heading placeholder {date} is unknown"),
    ('[page]\nbody = "{}"\nfields = ["identity"]\nheading = "{"', "bad heading"),
    ('[page]\nbody = "{}"\nfields = ["identity"]\nfoot = "x"', "unknown key page.foot"),
])
def test_script_errors_are_one_line_naming_the_file(text, message):
    with pytest.raises(InventoryScriptError) as err:
        parse_script(text, "inventory.toml")
    assert str(err.value).startswith("inventory.toml: ")
    assert message in err.value.reason
    assert "\n" not in str(err.value)


MCO_RUBY = """\
inventory do
  format "%s:\\t\\t\\t%s"
  fields { [ identity, facts["lsbdistdescription"] ] }
end
"""
MCO_FORMATTED = """\
# a paged report, MCollective style
formatted_inventory do
  page_length 20
  page_heading <<TOP
Node Report @<<<<<<<<<<<<<<<<<<<<<<<<<
            time
TOP
  page_body <<BODY
@<<<<<<<<<<<<<<<< @<<<<<<<<<<<<
identity,         facts["customer"]
BODY
end
"""


@pytest.mark.parametrize(("text", "line"), [
    (MCO_RUBY, "line 1: `inventory do`"),
    (MCO_FORMATTED, "line 2: `formatted_inventory do`"),
    ('\n  format "%s"\n', 'line 2: `format "%s"`'),
    ('fields { [ identity ] }', "line 1: `fields { [ identity ] }`"),
    ("page_length 20\n", "line 1: `page_length 20`"),
])
def test_an_mcollective_ruby_script_is_recognised_and_points_at_the_guide(text, line):
    with pytest.raises(InventoryScriptError) as err:
        parse_script(text, "inventory.mc")
    assert str(err.value) == (
        f"inventory.mc: this is MCollective's Ruby inventory.mc DSL ({line}), which nmc does not run; nmc scripts "
        "are TOML, e.g. format = \"%s\" and fields = [\"identity\"]: see docs/inventory.md, "
        "'From an MCollective inventory.mc'")


def test_ruby_looking_text_inside_valid_toml_is_no_ruby():
    script = parse_script('format = "%s"\nfields = ["identity"]\n# inventory do\n', "x.toml")
    assert script.source == "x.toml"
    with pytest.raises(InventoryScriptError, match="TOML syntax"):
        parse_script('format = "%s\nfields = [', "x.toml")  # broken TOML without Ruby: the TOML error


def test_load_script_reads_a_file_and_names_it(tmp_path: Path):
    path = tmp_path / "inventory.toml"
    path.write_text(MCO_SAMPLE, encoding="utf-8")
    assert load_script(path).source == str(path)
    with pytest.raises(InventoryScriptError) as err:
        load_script(tmp_path / "nosuch.toml")
    assert str(err.value) == f"{tmp_path / 'nosuch.toml'}: cannot read the script: No such file or directory"
