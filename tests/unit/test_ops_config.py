"""Configuration parsing, precedence, origins and typed access (nmc.ops.config.files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmc.ops.config.parse import RESERVED_ENV, parse_cfg
from nmc.ops.config.files import (
    KNOWN_KEYS,
    Config,
    ConfigError,
    Setting,
    find_client_config,
    find_server_config,
    load_config,
)


def write(path: Path, text: str) -> Path:
    """Create ``path`` (and its directory) holding ``text``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- parse_cfg -------------------------------------------------------------


def test_parse_skips_comments_and_blanks_and_strips_whitespace() -> None:
    text = "# a comment\n\n   # indented comment\n  main_collective   =  prod  \nplugin.nats.servers=nats://a:4222\n"
    assert parse_cfg(text, "x.cfg") == [("main_collective", "prod", 4), ("plugin.nats.servers", "nats://a:4222", 5)]


def test_parse_keeps_hash_and_equals_inside_values() -> None:
    assert parse_cfg("motd = build #42 a=b\n", "x.cfg") == [("motd", "build #42 a=b", 1)]


def test_parse_allows_empty_value_and_lowercases_key() -> None:
    assert parse_cfg("LogFile =\r\n", "x.cfg") == [("logfile", "", 1)]


def test_parse_line_without_equals_names_file_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_cfg("a = 1\n\n# c\n\n\n\nfoo\n", "/etc/nmc/server.cfg")
    assert str(info.value) == "/etc/nmc/server.cfg:7: expected 'key = value', got 'foo'"
    assert (info.value.path, info.value.line) == ("/etc/nmc/server.cfg", 7)


@pytest.mark.parametrize("line", ["= value", "two words = x", "plugin..nats = x", "a.b. = x"])
def test_parse_rejects_malformed_keys(line: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cfg(f"ok = 1\n{line}\n", "c.cfg")
    assert info.value.line == 2
    assert str(info.value).startswith("c.cfg:2: ")


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True),
            st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20).map(str.strip),
        ),
        max_size=8,
    )
)
def test_parse_round_trips_written_settings(pairs: list[tuple[str, str]]) -> None:
    text = "".join(f"{key} = {value}\n" for key, value in pairs)
    assert parse_cfg(text, "x.cfg") == [(k, v, n) for n, (k, v) in enumerate(pairs, start=1)]


# --- load_config: files, drop-ins, environment -----------------------------


def test_defaults_depend_on_kind() -> None:
    client = load_config(None, kind="client", env={})
    server = load_config(None, kind="server", env={})
    assert client.get("timeout") == "10" and client.get("identity") is None
    assert server.get("agent_timeout") == "60" and server.get("timeout") is None
    assert server.get("main_collective") == "nmc"
    assert server.origin("plugin.nats.servers") == "default"
    assert client.source is None


def test_origins_carry_file_and_line_and_later_lines_win(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "server.cfg", "main_collective = a\n# x\nmain_collective = b\nttl = 30\n")
    cfg = load_config(cfg_file, kind="server", env={})
    assert cfg.get("main_collective") == "b"
    assert cfg.origin("main_collective") == f"{cfg_file}:3"
    assert cfg.get_int("ttl") == 30
    assert cfg.origin("ttl") == f"{cfg_file}:4"
    assert cfg.source == cfg_file


def test_precedence_main_then_dropins_then_env(tmp_path: Path) -> None:
    main = write(tmp_path / "server.cfg", "plugin.nats.servers = nats://main:4222\nplugin.nats.tls_ca = main.pem\n")
    dropin = write(tmp_path / "plugin.d" / "nats.cfg", "servers = nats://dropin:4222\ntls_ca = dropin.pem\n")
    env = {"NMC_PLUGIN__NATS__SERVERS": "nats://env:4222"}
    cfg = load_config(main, kind="server", env=env)
    assert cfg.get("plugin.nats.servers") == "nats://env:4222"
    assert cfg.origin("plugin.nats.servers") == "env NMC_PLUGIN__NATS__SERVERS"
    assert cfg.get("plugin.nats.tls_ca") == "dropin.pem"
    assert cfg.origin("plugin.nats.tls_ca") == f"{dropin}:2"


def test_dropins_only_read_visible_cfg_files(tmp_path: Path) -> None:
    main = write(tmp_path / "client.cfg", "")
    write(tmp_path / "plugin.d" / "b.cfg", "x = from-b\n")
    write(tmp_path / "plugin.d" / "a.cfg", "x = from-a\n")
    write(tmp_path / "plugin.d" / "c.cfg.bak", "x = backup\n")
    write(tmp_path / "plugin.d" / ".d.cfg", "x = hidden\n")
    cfg = load_config(main, env={})
    assert {k: s.value for k, s in cfg.settings.items() if s.origin != "default"} == {
        "plugin.a.x": "from-a",
        "plugin.b.x": "from-b",
    }


def test_dropins_are_read_in_file_name_order(tmp_path: Path) -> None:
    # Two drop-ins can only set the same key through a dotted file name:
    # 'foo.bar.cfg' sorts before 'foo.cfg', so foo.cfg is read last and wins.
    main = write(tmp_path / "client.cfg", "")
    write(tmp_path / "plugin.d" / "foo.cfg", "bar.x = from-foo\n")
    write(tmp_path / "plugin.d" / "foo.bar.cfg", "x = from-foo-bar\n")
    cfg = load_config(main, env={})
    assert cfg.get("plugin.foo.bar.x") == "from-foo"
    assert cfg.origin("plugin.foo.bar.x") == f"{tmp_path / 'plugin.d' / 'foo.cfg'}:1"


def test_dropin_syntax_error_names_the_dropin(tmp_path: Path) -> None:
    main = write(tmp_path / "server.cfg", "ttl = 5\n")
    bad = write(tmp_path / "plugin.d" / "nats.cfg", "servers = x\noops\n")
    with pytest.raises(ConfigError) as info:
        load_config(main, kind="server", env={})
    assert str(info.value) == f"{bad}:2: expected 'key = value', got 'oops'"


def test_env_overrides_plain_keys_and_ignores_reserved_and_foreign_names() -> None:
    env = {name: "/somewhere" for name in RESERVED_ENV} | {"NMC_MAIN_COLLECTIVE": "prod", "HOME": "/h", "XNMC_TTL": "1"}
    cfg = load_config(None, env=env)
    assert cfg.get("main_collective") == "prod"
    assert cfg.origin("main_collective") == "env NMC_MAIN_COLLECTIVE"
    assert cfg.get_int("ttl") == 60
    assert set(cfg.settings) == {k for k, spec in KNOWN_KEYS.items() if "client" in spec.kinds}


def test_env_name_that_cannot_be_a_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"NMC_": "x"})
    assert "NMC_" in str(info.value)


def test_unknown_keys_are_kept_as_plugin_settings(tmp_path: Path) -> None:
    main = write(tmp_path / "client.cfg", "plugin.puppet.command = /usr/bin/puppet agent\n")
    cfg = load_config(main, env={"NMC_PLUGIN__PUPPET__SPLAY": "true"})
    assert cfg.plugin("puppet") == {"command": "/usr/bin/puppet agent", "splay": "true"}
    assert cfg.plugin("Puppet") == cfg.plugin("puppet")


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.cfg", env={})
    assert str(info.value) == f"config file not found: {tmp_path / 'nope.cfg'}"


def test_directory_and_non_utf8_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})
    binary = tmp_path / "bin.cfg"
    binary.write_bytes(b"ttl = \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary, env={})


def test_bad_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        load_config(None, kind="agent", env={})


# --- paths -----------------------------------------------------------------


def test_relative_paths_resolve_against_the_file_that_set_them(tmp_path: Path) -> None:
    main = write(tmp_path / "etc" / "server.cfg", "plugin.security.ca_file = ssl/ca.pem\nplugin.yaml = a.yaml: /abs/b.yaml ::\n")
    write(tmp_path / "etc" / "plugin.d" / "security.cfg", "cert_file = node.pem\n")
    cfg = load_config(main, kind="server", env={})
    assert cfg.get("plugin.security.ca_file") == "ssl/ca.pem"
    assert cfg.get_path("plugin.security.ca_file") == tmp_path / "etc" / "ssl" / "ca.pem"
    assert cfg.get_path("plugin.security.cert_file") == tmp_path / "etc" / "plugin.d" / "node.pem"
    assert cfg.get_paths("plugin.yaml") == [tmp_path / "etc" / "a.yaml", Path("/abs/b.yaml")]


def test_env_paths_resolve_against_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={"NMC_PLUGIN__SECURITY__KEY_FILE": "keys/me.pem"})
    monkeypatch.chdir("/")
    assert cfg.get_path("plugin.security.key_file") == tmp_path / "keys" / "me.pem"


def test_tilde_expands_and_empty_path_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    main = write(tmp_path / "client.cfg", "logfile = ~/nmc.log\n")
    cfg = load_config(main, env={})
    assert cfg.get_path("logfile") == tmp_path / "nmc.log"
    assert cfg.get_path("plugin.nats.tls_ca") is None
    assert cfg.get_path("never.set") is None
    assert cfg.get_paths("never.set") == []


# --- typed getters ---------------------------------------------------------


def config_of(**values: str) -> Config:
    """A Config whose settings came from a made-up file, one per line."""
    return Config({k: Setting(k, v, f"/c.cfg:{n}") for n, (k, v) in enumerate(values.items(), start=1)})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("YES", True), ("1", True), ("On", True), ("false", False), ("no", False), ("0", False), ("OFF", False)],
)
def test_get_bool_accepts_the_usual_words(text: str, expected: bool) -> None:
    assert config_of(flag=text).get_bool("flag") is expected


def test_get_bool_error_names_key_value_and_origin() -> None:
    cfg = config_of(a="1", flag="maybe")
    with pytest.raises(ConfigError) as info:
        cfg.get_bool("flag")
    assert str(info.value) == "/c.cfg:2: flag: expected true/false, yes/no, on/off or 1/0, got 'maybe'"


def test_get_int_error_from_env_names_the_variable() -> None:
    cfg = load_config(None, env={"NMC_TTL": "soon"})
    with pytest.raises(ConfigError) as info:
        cfg.get_int("ttl")
    assert str(info.value) == "ttl: expected an integer, got 'soon' (from env NMC_TTL)"
    assert info.value.path is None


@pytest.mark.parametrize("text", ["", "1.5", "ten"])
def test_get_int_rejects_non_integers(text: str) -> None:
    with pytest.raises(ConfigError, match="expected an integer"):
        config_of(n=text).get_int("n")


@pytest.mark.parametrize("text", ["nan", "inf", "fast"])
def test_get_float_rejects_non_finite_and_words(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a number"):
        config_of(x=text).get_float("x")


def test_typed_getters_return_default_when_unset() -> None:
    cfg = load_config(None, env={})
    assert cfg.get_float("discovery_stall") == 0.3
    assert cfg.get_int("nothing", 7) == 7
    assert cfg.get_bool("nothing", False) is False
    assert cfg.get("nothing", "x") == "x"


def test_get_list_splits_commas_and_drops_empties() -> None:
    cfg = config_of(servers=" nats://a:4222 , ,nats://b:4222,")
    assert cfg.get_list("servers") == ["nats://a:4222", "nats://b:4222"]
    assert cfg.get_list("unset") == []


def test_with_overrides_returns_a_new_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = load_config(None, env={})
    over = base.with_overrides({"TTL": "5", "plugin.security.ca_file": "ca.pem"})
    assert base.get("ttl") == "60"
    assert over.get_int("ttl") == 5 and over.origin("ttl") == "command line"
    assert over.get_path("plugin.security.ca_file") == tmp_path / "ca.pem"
    assert base.with_overrides({"ttl": "1"}, origin="test").origin("ttl") == "test"
    with pytest.raises(ConfigError, match="invalid setting name"):
        base.with_overrides({"bad key": "1"})


def test_config_settings_cannot_be_mutated() -> None:
    cfg = load_config(None, env={})
    with pytest.raises(TypeError):
        cfg.settings["ttl"] = Setting("ttl", "1", "x")  # type: ignore[index]


# --- finding files ---------------------------------------------------------


def test_find_client_config_search_order(tmp_path: Path) -> None:
    home, etc = tmp_path / "home", tmp_path / "etc"
    assert find_client_config({}, home, etc=etc) is None
    dev = write(home / ".local/state/nmc/dev/client.cfg", "")
    assert find_client_config({}, home, etc=etc) == dev
    system = write(etc / "client.cfg", "")
    assert find_client_config({}, home, etc=etc) == system
    user = write(home / ".nmc" / "client.cfg", "")
    assert find_client_config({}, home, etc=etc) == user
    assert find_client_config({"NMC_CONFIG": "~/x.cfg"}, home, etc=etc) == home / "x.cfg"


def test_find_client_config_returns_missing_explicit_file_so_loading_reports_it(tmp_path: Path) -> None:
    write(tmp_path / ".nmc" / "client.cfg", "")
    found = find_client_config({"NMC_CONFIG": str(tmp_path / "typo.cfg")}, tmp_path, etc=tmp_path)
    assert found == tmp_path / "typo.cfg"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(found, env={})


def test_find_server_config(tmp_path: Path) -> None:
    assert find_server_config({}, tmp_path, etc=tmp_path) is None
    server = write(tmp_path / "server.cfg", "")
    assert find_server_config({}, tmp_path, etc=tmp_path) == server
    assert find_server_config({"NMC_SERVER_CONFIG": "/n/s.cfg"}, tmp_path, etc=tmp_path) == Path("/n/s.cfg")


def test_nmc_etc_dir_moves_the_system_wide_config_directory(tmp_path):
    from nmc.ops.config.files import find_client_config, find_server_config, load_config

    etc, home = tmp_path / "usr-local-etc-nmc", tmp_path / "home"
    etc.mkdir()
    (etc / "client.cfg").write_text("main_collective = site\n")
    (etc / "server.cfg").write_text("identity = n1\n")
    env = {"NMC_ETC_DIR": str(etc)}
    assert find_client_config(env, home) == etc / "client.cfg"
    assert find_server_config(env, home) == etc / "server.cfg"
    assert find_client_config({"NMC_ETC_DIR": str(tmp_path / "nothing")}, home) is None
    # Reserved: it names a directory, it is not the setting "etc_dir".
    assert "etc_dir" not in load_config(None, kind="client", env=env).settings


def test_default_discovery_method_is_read_and_a_bad_one_names_its_line(tmp_path: Path) -> None:
    from nmc.ops.config.settings import SettingsError, client_settings

    good = write(tmp_path / "client.cfg", "default_discovery_method = broadcast\n")
    assert client_settings(load_config(good)).discovery_method == "broadcast"
    assert client_settings(load_config(write(tmp_path / "empty.cfg", ""))).discovery_method == "auto"
    bad = write(tmp_path / "bad.cfg", "ttl = 30\ndefault_discovery_method = mongo\n")
    with pytest.raises(SettingsError, match=r"unknown default discovery method 'mongo'.*bad\.cfg:2"):
        client_settings(load_config(bad))
