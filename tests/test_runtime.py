"""What a run is made of: ``RunConfig`` from arguments (``dashboard.runconfig``), the vendor
settings and adapters (``dashboard.sources``) and ``start_runtime`` / ``Runtime.stop``
(``dashboard.runtime``), through the ``runtime`` fixture."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dashboard.cli import build_parser, config_from_argv, main
from dashboard.runconfig import RunConfig, UsageError
from dashboard.runtime import Runtime, _replay_store_name
from dashboard.sources import DEFAULT_SYMBOLS_SIM, make_adapter, normalize_symbols
from feed.vendors.itick import ITickAdapter

TOKEN = "tok-runtime-9f8e7d"
FAST = {"backoff_initial_s": 0.05, "backoff_cap_s": 1.0, "ping_interval_s": 0}


@pytest.fixture(autouse=True)
def no_tokens(monkeypatch):
    # Tokens from the developer's environment must not change what these tests see.
    monkeypatch.delenv("ALLTICK_TOKEN", raising=False)
    monkeypatch.delenv("ITICK_TOKEN", raising=False)


# -- RunConfig --------------------------------------------------------------------------------


def test_from_args_when_no_arguments_then_embedded_binance_with_defaults():
    config = config_from_argv([])
    assert config == RunConfig()
    assert config.embedded and config.vendor_name == "binance" and config.binance_market == "spot"
    assert config.kline_streams is None and config.symbols == ()
    assert config.bar_options == {"utc_offset": None, "session_tz": None, "session_open": "00:00",
                                  "empty": "gap", "late_tolerance_ns": 2_000_000_000, "session_reset": False}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1


def test_from_args_when_every_option_then_fields_carry_them(tmp_path):
    config = config_from_argv([
        "--symbols", " btcusdt,, ethusdt ", "--market", "usdm", "--kline-check", "--data-dir", str(tmp_path),
        "--retention-days", "2", "--retention-mb", "5", "--stale-after", "3", "--host", "0.0.0.0",
        "--port", "9000", "--bar", "5m", "--utc-offset", "+08:00", "--empty", "flat", "--late-tolerance", "0.5",
        "--session-reset", "--vendor", "binance",
    ])
    assert config.symbols == ("btcusdt", "ethusdt")  # as typed: the adapter normalises them
    assert (config.market, config.kline_streams, config.data_dir) == ("usdm", "1m", tmp_path)
    assert (config.retention_days, config.retention_mb, config.stale_after) == (2.0, 5.0, 3.0)
    assert (config.host, config.port, config.bar, config.embedded) == ("0.0.0.0", 9000, "5m", False)
    assert config.bar_options["utc_offset"] == "+08:00" and config.bar_options["late_tolerance_ns"] == 500_000_000
    assert config.bar_options["empty"] == "flat" and config.bar_options["session_reset"] is True


@pytest.mark.parametrize(("argv", "words"), [
    (["--bar", "7m"], "--bar: "),
    (["--late-tolerance", "-1"], "--late-tolerance must be >= 0"),
    (["--utc-offset", "+25:00"], "bar rules: "),
    (["--url", "http://example.com"], "--url: 'http://example.com' is not a ws:// or wss:// URL"),
    (["--vendor", "binance", "--rest-url", "ftp://x"], "--rest-url: 'ftp://x' is not an http:// or https:// URL"),
    (["--vendor", "alltick", "--market", "usdm"], "--market applies to --vendor binance only, not alltick"),
    (["--vendor", "itick", "--kline-check"], "iTick's are not compared"),
    (["--itick-market", "forex"], "--itick-market applies to --vendor itick only, not binance"),
    (["--vendor", "binance", "--binance-host", "data", "--market", "usdm"], "serves spot only"),
    (["--binance-host", "data"], "cannot go with --url or the embedded exchange"),
    (["--vendor", "binance", "--faults", "drop_every=5"], "--faults applies to the embedded exchange only"),
    (["--faults", "nonsense=1"], "--faults: "),
    (["--replay", "/nonexistent/file.gz"], "--replay: /nonexistent/file.gz: no such file"),
])
def test_from_args_when_bad_option_then_usage_error_naming_it(argv, words):
    with pytest.raises(UsageError) as info:
        config_from_argv(argv)
    assert words in str(info.value)


def test_from_args_when_replay_with_vendor_then_refused(tmp_path):
    rec = tmp_path / "s.txt"
    rec.write_text('1 {"a":1}\n')
    with pytest.raises(UsageError, match="--replay plays through the embedded exchange; drop --vendor"):
        config_from_argv(["--replay", str(rec), "--vendor", "binance"])


def test_from_args_when_vendor_token_missing_then_one_message_never_asking_for_argv():
    with pytest.raises(UsageError, match="iTick needs a token: set ITICK_TOKEN") as info:
        config_from_argv(["--vendor", "itick"])
    assert "never taken from the command line" in str(info.value)


def test_from_args_when_token_in_environment_then_held_but_not_shown(monkeypatch):
    monkeypatch.setenv("ITICK_TOKEN", TOKEN)
    config = config_from_argv(["--vendor", "itick", "--itick-market", "forex"])
    assert config.token == TOKEN and TOKEN not in repr(config)
    assert config.itick_market == "forex" and config.max_symbols is None


def test_from_args_when_config_file_then_token_plan_and_limit_read(tmp_path):
    path = tmp_path / "tickscope.toml"
    path.write_text(f'[alltick]\ntoken = "{TOKEN}"\nmax_symbols = 3\n')
    path.chmod(0o600)
    config = config_from_argv(["--vendor", "alltick", "--config", str(path)])
    assert (config.token, config.max_symbols, config.alltick_plan) == (TOKEN, 3, None)
    path.write_text(f'[alltick]\ntoken = "{TOKEN}"\nplan = "gold"\n')
    with pytest.raises(UsageError, match=r"--config: \[alltick\] plan must be one of"):
        config_from_argv(["--vendor", "alltick", "--config", str(path)])
    path.write_text("[alltick\n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        config_from_argv(["--vendor", "alltick", "--config", str(path)])


# -- adapters and symbols ---------------------------------------------------------------------


def test_make_adapter_when_itick_then_its_symbols_normalised_by_it():
    adapter = make_adapter(RunConfig(vendor="itick", token=TOKEN), None, None)
    assert isinstance(adapter, ITickAdapter)
    assert normalize_symbols(["aapl$us", "700.HK"], adapter) == ["AAPL$US", "700$HK"]
    with pytest.raises(UsageError, match="--symbols: "):
        normalize_symbols(["=cmd"], adapter)


def test_replay_store_name_when_same_files_in_any_order_then_same_name(tmp_path):
    a, b = tmp_path / "a.gz", tmp_path / "b.gz"
    assert _replay_store_name((a, b), "spot") == _replay_store_name((b, a), "spot")
    assert _replay_store_name((a,), "spot") != _replay_store_name((a, b), "spot")
    assert _replay_store_name((a,), "usdm").startswith("replay/usdm-")


# -- the command ------------------------------------------------------------------------------


def test_main_when_bad_argument_then_one_message_and_exit_code_2(capsys, tmp_path):
    assert main(["--late-tolerance", "-1", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tickscope: error: --late-tolerance must be >= 0 seconds, not -1.0"]


def test_build_parser_when_bars_subcommand_then_main_hands_it_to_the_converter(capsys):
    assert main(["bars"]) == 2  # the converter's own usage error: no input named
    assert capsys.readouterr().err.startswith("tickscope bars: error: ")
    assert build_parser().prog == "tickscope"


# -- start and stop ---------------------------------------------------------------------------


def test_start_runtime_when_embedded_then_symbols_subscribed_and_api_answers(runtime, tmp_path):
    rt = runtime("--symbols", "btcusdt", "--data-dir", str(tmp_path), feed_options=FAST)
    assert isinstance(rt, Runtime) and rt.config.symbols == ("btcusdt",)
    assert rt.engine.symbols() == ["BTCUSDT"] and rt.exchange is not None
    assert rt.store is not None and rt.recorder is None
    resp = rt.app.server.test_client().get("/api/health")
    assert resp.status_code == 200 and "BTCUSDT" in json.loads(resp.get_data())["symbols"]


def test_start_runtime_when_no_symbols_then_the_simulator_defaults(runtime, tmp_path):
    rt = runtime("--data-dir", str(tmp_path), feed_options=FAST, engine_options={"queue_size": 1000})
    assert rt.engine.symbols() == list(DEFAULT_SYMBOLS_SIM)


def test_start_runtime_when_recording_exists_then_usage_error_and_nothing_left_running(runtime, tmp_path):
    target = tmp_path / "rec.txt"
    target.write_text("")
    with pytest.raises(UsageError, match="--record: .* exists"):
        runtime("--record", str(target), "--data-dir", str(tmp_path / "d"))


def test_runtime_stop_when_called_twice_then_quiet(runtime, tmp_path):
    rt = runtime("--symbols", "ETHUSDT", "--data-dir", str(tmp_path), feed_options=FAST)
    rt.stop()
    rt.stop()  # the fixture stops it a third time
