"""Which vendor adapter and symbols a run uses: vendor settings, tokens, adapters, defaults.

Tokens come only from the environment (``ALLTICK_TOKEN``, ``ITICK_TOKEN``, which win) or
the TOML file of ``--config`` (``[alltick] token = "..."``), never from a command-line
argument; they never appear in a message. Symbols are checked by the adapter only
(``adapter.normalize_symbol``, ``adapter.validate_subscription``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .runconfig import RunConfig

__all__ = ["VENDORS", "DEFAULT_SYMBOLS", "DEFAULT_SYMBOLS_SIM", "load_vendor_settings",
           "make_adapter", "normalize_symbols", "default_symbols"]

log = logging.getLogger("tickscope")

#: Symbols the embedded simulator serves when ``--symbols`` is not given.
DEFAULT_SYMBOLS_SIM = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
#: Vendors of ``--vendor`` and the environment variable holding each one's token.
VENDORS: dict[str, str | None] = {"binance": None, "alltick": "ALLTICK_TOKEN", "itick": "ITICK_TOKEN"}
#: Symbols subscribed when ``--symbols`` is not given, per vendor (iTick: per market).
DEFAULT_SYMBOLS: dict[str, tuple[str, ...]] = {
    "binance": ("BTCUSDT",), "alltick": ("AAPL.US",), "itick:stock": ("AAPL$US",),
    "itick:forex": ("EURUSD$GB",), "itick:crypto": ("BTCUSDT$BA",),
}
#: Where each vendor's token comes from, for the missing-token message.
_TOKEN_HELP = {"alltick": "free registration at alltick.co", "itick": "register at itick.org"}
_DISPLAY = {"alltick": "AllTick", "itick": "iTick"}


def load_vendor_settings(vendor: str, config_file: str | None) -> dict[str, Any]:
    """Return the ``RunConfig`` vendor fields (``token``, ``max_symbols``, ``alltick_plan``).

    Parameters
    ----------
    vendor : {"alltick", "itick"}
    config_file : str, optional
        TOML file with a ``[vendor]`` table (``token``, ``max_symbols``, AllTick ``plan``).

    Raises
    ------
    UsageError
        For an unreadable or invalid file, a bad setting or a missing token.
    """
    section = _vendor_section(_load_toml(config_file), vendor, config_file)
    settings = {"token": _vendor_token(vendor, section, config_file),
                "max_symbols": _int_setting(section, vendor, "max_symbols"), "alltick_plan": None}
    if vendor == "alltick":
        from feed.vendors.alltick import PLAN_SYMBOLS_PER_CONNECTION

        plan = section.get("plan")
        if plan is not None and plan not in PLAN_SYMBOLS_PER_CONNECTION:
            raise UsageError(f"--config: [alltick] plan must be one of "
                             f"{', '.join(PLAN_SYMBOLS_PER_CONNECTION)}, not {plan!r}")
        settings["alltick_plan"] = plan
    return settings


def make_adapter(config: RunConfig, ws_url: str | None, rest_url: str | None) -> Any:
    """Return the adapter of ``config``'s vendor, connecting to ``ws_url`` / ``rest_url``.

    Parameters
    ----------
    config : RunConfig
    ws_url, rest_url : str, optional
        Endpoints replacing the vendor's (the embedded exchange's, or ``--url``).

    Raises
    ------
    UsageError
        Naming the options, when the adapter refuses them (never showing a token).
    """
    from feed.vendors.base import DEFAULT_TIME_WINDOW_S

    vendor = config.vendor_name
    # Exchange times further than a day from their receive time are refused at the adapter;
    # a replay serves recorded (old) times, so it gets no window.
    window = None if config.replay else DEFAULT_TIME_WINDOW_S
    try:
        if vendor == "binance":
            from feed.vendors.binance import BinanceAdapter

            return BinanceAdapter(config.binance_market, ws_url=ws_url, rest_url=rest_url,
                                  host=config.binance_host or "main", klines=config.kline_streams,
                                  time_window_s=window)
        if vendor == "alltick":
            from feed.vendors.alltick import PLAN_SYMBOLS_PER_CONNECTION, AllTickAdapter, endpoints_from

            limit = config.max_symbols or PLAN_SYMBOLS_PER_CONNECTION[config.alltick_plan or "free"]
            stock, fx = endpoints_from(config.url) if config.url else (None, None)
            return AllTickAdapter(token=config.token, stock_url=stock, forex_crypto_url=fx,
                                  max_symbols_per_connection=limit, time_window_s=window)
        from feed.vendors.itick import ITickAdapter, base_url_of

        market = config.itick_market or "stock"
        return ITickAdapter(token=config.token, market=market,
                            base_url=base_url_of(config.url, market) if config.url else None,
                            max_symbols_per_connection=config.max_symbols, time_window_s=window)
    except ValueError as exc:
        option = {"binance": "--market/--binance-host/--url", "alltick": "--vendor alltick",
                  "itick": "--vendor itick"}[vendor]
        raise UsageError(f"{option}: {exc}") from None


def normalize_symbols(texts: Iterable[str], adapter: Any) -> list[str]:
    """Return ``texts`` in the adapter's normal form; UsageError for one it refuses."""
    out = []
    for text in texts:
        try:
            out.append(adapter.normalize_symbol(text))
        except ValueError as exc:
            raise UsageError(f"--symbols: {exc}") from None
    return out


def default_symbols(vendor: str, adapter: Any) -> list[str]:
    """Return the symbols a live ``vendor`` subscribes when none are named.

    Raises
    ------
    UsageError
        For an iTick market without defaults (the user must name the symbols).
    """
    key = vendor if vendor != "itick" else f"itick:{adapter.market}"
    if key not in DEFAULT_SYMBOLS:
        raise UsageError(f"--symbols: name the symbols for the iTick {adapter.market} market (CODE$REGION)")
    return list(DEFAULT_SYMBOLS[key])


def _load_toml(path_text: str | None) -> dict:
    # The TOML config file as a dict ({} without one); one message per problem.
    if not path_text:
        return {}
    import tomllib

    path = Path(path_text)
    try:
        with path.open("rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"--config: {path_text}: no such file") from None
    except OSError as exc:
        raise UsageError(f"--config: cannot read {path_text}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config: {path_text} is not valid TOML: {exc}") from None
    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("--config: %s holds tokens and is readable by other users; chmod 600 it", path_text)
    except OSError:
        pass
    return config


def _vendor_section(config: dict, vendor: str, path_text: str | None) -> dict:
    section = config.get(vendor, {})
    if not isinstance(section, dict):
        raise UsageError(f"--config: {path_text}: [{vendor}] must be a table")
    return section


def _vendor_token(vendor: str, section: dict, config_file: str | None) -> str:
    # The token from the environment (wins) or the config file; never from argv.
    env = VENDORS[vendor]
    value = os.environ.get(env) if env else None
    if value is None or not value.strip():
        value = section.get("token")
        if value is not None and not isinstance(value, str):
            raise UsageError(f"--config: [{vendor}] token must be a string")
    if value is None or not value.strip():
        where = (f" or add token = \"...\" under [{vendor}] in the --config file" if config_file
                 else f" or pass --config FILE with [{vendor}] token = \"...\"")
        raise UsageError(f"{_DISPLAY.get(vendor, vendor)} needs a token: set {env}{where} "
                         f"({_TOKEN_HELP[vendor]}); tokens are never taken from the command line")
    return value


def _int_setting(section: dict, vendor: str, key: str) -> int | None:
    value = section.get(key)
    if value is not None and (type(value) is not int or value < 1):
        raise UsageError(f"--config: [{vendor}] {key} must be a whole number >= 1, not {value!r}")
    return value
