"""CSV export format, range selection and file names (the /api routes: ``test_api.py``)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dashboard.export import axis_value_ns, bars_in_view, export_filename
from feed.core.csvformat import RATIO_DECIMALS, VWAP_EXTRA_DECIMALS, bars_to_csv, inert
from feed.core.models import BAR_COLUMNS, iso_ms

T0 = 1_723_161_300 * 10**9  # 2024-08-08T23:55:00Z
MIN = 60 * 10**9

HEADER = ",".join(BAR_COLUMNS) + "\n"


def frame(rows: list[dict]) -> pd.DataFrame:
    """Return a bars frame (BAR_COLUMNS) from partial rows with sensible defaults.

    amplitude and change default to NaN (a series' first bar), as bars_to_frame gives them.
    """
    out = []
    for i, r in enumerate(rows):
        row = dict(symbol="BTCUSDT", bar="1m", start=T0 + i * MIN, end=T0 + (i + 1) * MIN,
                   open=100.0, high=100.0, low=100.0, close=100.0, volume=1.0, turnover=100.0,
                   vwap=100.0, trade_count=1, buy_volume=1.0, sell_volume=0.0, closed=True)
        row.update(r)
        out.append(row)
    return pd.DataFrame(out, columns=list(BAR_COLUMNS))


# -- bars_to_csv ------------------------------------------------------------------------------


def test_bars_to_csv_when_small_frame_then_exact_text():
    df = frame([
        dict(open=60000.1, high=60005.2, low=60000.1, close=60005.2, volume=0.1 + 0.2,
             turnover=60000.1 * 0.1 + 60005.2 * 0.2, vwap=(60000.1 * 0.1 + 60005.2 * 0.2) / (0.1 + 0.2),
             trade_count=2, buy_volume=0.1, sell_volume=0.2),
        dict(start=T0 + MIN + 123_456_789, end=T0 + MIN + 999_999_999, open=60005.2, high=60007.0,
             low=60001.15, close=60001.15, volume=1.5, turnover=90005.0, vwap=60003.33333333333,
             trade_count=7, buy_volume=1.5, sell_volume=0.0, closed=False,
             amplitude=(60007.0 - 60001.15) / 60005.2, change=(60001.15 - 60005.2) / 60005.2),
    ])
    text = bars_to_csv(df, price_decimals=2, size_decimals=3)
    assert text == (
        HEADER
        + "BTCUSDT,1m,2024-08-08T23:55:00.000Z,2024-08-08T23:56:00.000Z,60000.10,60005.20,60000.10,"
          "60005.20,0.300,18001.05000,60003.500000,2,0.100,0.200,true,,\n"
        + "BTCUSDT,1m,2024-08-08T23:56:00.123Z,2024-08-08T23:56:00.999Z,60005.20,60007.00,60001.15,"
          "60001.15,1.500,90005.00000,60003.333333,7,1.500,0.000,false,0.00009749,-0.00006749\n"
    )


def test_bars_to_csv_when_empty_frame_then_header_only():
    assert bars_to_csv(frame([]), price_decimals=2, size_decimals=3) == HEADER


def test_bars_to_csv_when_float_noise_then_fixed_decimals_per_column():
    df = frame([dict(open=0.1 + 0.2, high=0.30000000000000004, low=0.3, close=0.3, volume=1e-9,
                     turnover=0.1 * 3, vwap=0.3, buy_volume=0.0, sell_volume=-0.0)])
    row = bars_to_csv(df, price_decimals=4, size_decimals=2).splitlines()[1].split(",")
    cols = dict(zip(BAR_COLUMNS, row))
    assert cols["open"] == cols["high"] == cols["low"] == cols["close"] == "0.3000"
    assert cols["volume"] == "0.00"  # rounds to zero: no "-0.00", no "1e-09"
    assert cols["sell_volume"] == "0.00"
    assert cols["turnover"] == "0.300000"  # price + size decimals
    assert cols["vwap"] == "0." + "3" + "0" * (4 + VWAP_EXTRA_DECIMALS - 1)


def test_bars_to_csv_when_zero_decimals_then_integers_without_point():
    df = frame([dict(open=101.0, high=102.0, low=100.0, close=101.0, volume=3.0, turnover=303.0,
                     vwap=101.0, buy_volume=3.0)])
    cols = dict(zip(BAR_COLUMNS, bars_to_csv(df, price_decimals=0, size_decimals=0).splitlines()[1].split(",")))
    assert (cols["open"], cols["volume"], cols["turnover"], cols["vwap"]) == ("101", "3", "303", "101.0000")


def test_bars_to_csv_when_nan_then_empty_cell():
    df = frame([dict(vwap=math.nan)])
    cols = dict(zip(BAR_COLUMNS, bars_to_csv(df, price_decimals=2, size_decimals=2).splitlines()[1].split(",")))
    assert cols["vwap"] == ""


@pytest.mark.parametrize("text", ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx"])
def test_inert_when_text_starts_like_a_formula_then_quote_prefixed(text):
    assert inert(text) == "'" + text


def test_inert_when_plain_text_then_unchanged():
    assert inert("BTCUSDT") == "BTCUSDT"
    assert inert("1m") == "1m"
    assert inert(None) == ""


def test_bars_to_csv_when_text_cells_hostile_then_inert_and_quoted():
    df = frame([dict(symbol="=HYPERLINK(\"x\",\"y\")", bar="@1m")])
    line = bars_to_csv(df, price_decimals=1, size_decimals=1).splitlines()[1]
    assert line.startswith('"\'=HYPERLINK(""x"",""y"")",\'@1m,')


def test_bars_to_csv_when_negative_price_then_number_not_prefixed():
    df = frame([dict(open=-37.63, high=-30.0, low=-40.0, close=-35.5)])  # WTI, April 2020
    cols = dict(zip(BAR_COLUMNS, bars_to_csv(df, price_decimals=2, size_decimals=0).splitlines()[1].split(",")))
    assert cols["open"] == "-37.63"


def test_bars_to_csv_when_column_missing_then_value_error():
    with pytest.raises(ValueError, match="vwap"):
        bars_to_csv(frame([{}]).drop(columns=["vwap"]), price_decimals=2, size_decimals=2)


def test_bars_to_csv_when_negative_decimals_then_value_error():
    with pytest.raises(ValueError, match="decimals"):
        bars_to_csv(frame([{}]), price_decimals=-1, size_decimals=2)


# -- iso_ms -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (T0, "2024-08-08T23:55:00.000Z"),
        (T0 + 999_999, "2024-08-08T23:55:00.000Z"),  # sub-ms truncated, not rounded
        (T0 + 1_000_000, "2024-08-08T23:55:00.001Z"),
        (T0 + 59_999_999_999, "2024-08-08T23:55:59.999Z"),
        (0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_iso_ms_when_ns_then_utc_milliseconds_z(ns, text):
    assert iso_ms(ns) == text


# -- range selection --------------------------------------------------------------------------


def test_axis_value_ns_when_plotly_date_strings_then_utc_ns():
    assert axis_value_ns("2024-08-08 23:55:00") == T0
    assert axis_value_ns("2024-08-08 23:55:00.5") == T0 + 500_000_000
    assert axis_value_ns("2024-08-08 23:55:00.1234") == T0 + 123_400_000
    assert axis_value_ns("2024-08-08T23:55:00Z") == T0
    assert axis_value_ns((T0 // 10**6) + 0.5) == T0 + 500_000  # epoch ms


def test_axis_value_ns_when_garbage_then_value_error():
    with pytest.raises(ValueError):
        axis_value_ns("yesterday-ish")
    with pytest.raises(ValueError):
        axis_value_ns(True)


def test_bars_in_view_when_time_range_then_starts_inside_inclusive():
    df = frame([{} for _ in range(10)])
    view = bars_in_view(df, ["2024-08-08 23:56:00", "2024-08-08 23:59:30"], spec="1m")
    assert view["start"].tolist() == [T0 + i * MIN for i in (1, 2, 3, 4)]


def test_bars_in_view_when_range_reversed_then_same_bars():
    df = frame([{} for _ in range(10)])
    a = bars_in_view(df, ["2024-08-08 23:59:30", "2024-08-08 23:56:00"], spec="1m")
    assert a["start"].tolist() == [T0 + i * MIN for i in (1, 2, 3, 4)]


def test_bars_in_view_when_range_cuts_a_bar_then_bar_in_only_if_start_inside():
    df = frame([{} for _ in range(3)])
    # 23:55:30 .. 23:56:30 holds the start of bar 1 only, though bar 0 ends inside it
    view = bars_in_view(df, ["2024-08-08 23:55:30", "2024-08-08 23:56:30"], spec="1m")
    assert view["start"].tolist() == [T0 + MIN]


def test_bars_in_view_when_index_range_then_bar_indices_from_first_index():
    df = frame([dict(bar="100t") for _ in range(10)])  # indices 500..509
    view = bars_in_view(df, [502.5, 506.4], spec="100t", first_index=500)
    assert view.index.tolist() == [3, 4, 5, 6]


def test_bars_in_view_when_no_range_then_every_bar():
    df = frame([{} for _ in range(4)])
    assert bars_in_view(df, None, spec="1m") is df


def test_bars_in_view_when_range_of_wrong_axis_type_then_value_error():
    df = frame([dict(bar="100t") for _ in range(3)])
    with pytest.raises(ValueError):
        bars_in_view(df, ["2024-08-08 23:56:00", "2024-08-08 23:59:30"], spec="100t")
    with pytest.raises(ValueError):
        bars_in_view(df, [1], spec="1m")


# -- file names -------------------------------------------------------------------------------


def test_export_filename_when_bars_then_symbol_spec_first_and_last_start():
    df = frame([{} for _ in range(3)])
    assert export_filename("BTCUSDT", "1m", df) == "BTCUSDT_1m_20240808T235500Z_20240808T235700Z.csv"


def test_export_filename_when_empty_or_odd_symbol_then_safe_name():
    assert export_filename("BTC/USDT", "0.5v", frame([])) == "BTC_USDT_0.5v.csv"


# -- amplitude and change (the two columns after closed) ------------------------------------


def test_bars_to_csv_when_amplitude_and_change_then_last_two_columns_ratio_decimals():
    df = frame([dict(open=100.0, high=102.0, low=99.0, close=101.0, amplitude=3 / 97.0, change=4 / 97.0),
                dict(open=101.0, high=101.0, low=95.5, close=96.0, amplitude=5.5 / 101.0, change=-5 / 101.0)])
    lines = bars_to_csv(df, price_decimals=1, size_decimals=1).splitlines()
    assert lines[0].endswith(",closed,amplitude,change")
    assert lines[1].endswith(",true,0.03092784,0.04123711")
    assert lines[2].endswith(",true,0.05445545,-0.04950495")
    assert RATIO_DECIMALS == 8
    assert all(len(cell.split(".")[1]) == RATIO_DECIMALS for line in lines[1:] for cell in line.split(",")[-2:])


def test_bars_to_csv_when_first_bar_of_series_then_amplitude_and_change_empty():
    line = bars_to_csv(frame([{}]), price_decimals=2, size_decimals=2).splitlines()[1]
    assert line.endswith(",true,,")


def test_bars_to_csv_when_change_rounds_to_zero_then_no_minus_sign():
    cols = dict(zip(BAR_COLUMNS, bars_to_csv(frame([dict(amplitude=0.0, change=-1e-12)]), price_decimals=2,
                                             size_decimals=2).splitlines()[1].split(",")))
    assert (cols["amplitude"], cols["change"]) == ("0.00000000", "0.00000000")


def test_bars_to_csv_when_bars_from_engine_frame_then_ratios_of_previous_close_even_for_a_slice():
    from feed.core.batch import bars_to_frame
    from feed.core.models import Bar, BarSpec

    spec = BarSpec.from_str("1m")
    closes = [100.0, 102.0, 99.0, 99.0]
    bars, prev = [], None
    for i, c in enumerate(closes):
        bars.append(Bar("BTCUSDT", spec, T0 + i * MIN, T0 + (i + 1) * MIN, c, c + 1, c - 1, c,
                        volume=1.0, turnover=c, trade_count=1, closed=True, prev_close=prev))
        prev = c
    # the bars of a zoomed view: the first of them still has its previous close
    rows = list(csv_rows(bars_to_csv(bars_to_frame(bars[2:]), price_decimals=1, size_decimals=1)))
    assert (rows[0]["amplitude"], rows[0]["change"]) == ("0.01960784", "-0.02941176")  # 2 / 102, -3 / 102
    assert (rows[1]["amplitude"], rows[1]["change"]) == ("0.02020202", "0.00000000")


def csv_rows(text: str):
    import csv
    import io

    return csv.DictReader(io.StringIO(text))


# -- bars in view when time bars are labelled at their end ------------------------------------


def test_bars_in_view_when_label_end_then_bars_whose_end_is_inside():
    df = frame([{} for _ in range(10)])  # ends 23:56 .. 00:05
    view = bars_in_view(df, ["2024-08-08 23:56:00", "2024-08-08 23:59:30"], spec="1m", label="end")
    assert view["start"].tolist() == [T0 + i * MIN for i in (0, 1, 2, 3)]
    start = bars_in_view(df, ["2024-08-08 23:56:00", "2024-08-08 23:59:30"], spec="1m")
    assert start["start"].tolist() == [T0 + i * MIN for i in (1, 2, 3, 4)]


def test_bars_in_view_when_label_end_and_tick_bars_then_indices_as_before():
    df = frame([dict(bar="100t") for _ in range(5)])
    assert bars_in_view(df, [1, 3], spec="100t", label="end").index.tolist() == [1, 2, 3]


def test_bars_in_view_when_label_unknown_then_value_error():
    with pytest.raises(ValueError, match="label"):
        bars_in_view(frame([{}]), None, spec="1m", label="close")
