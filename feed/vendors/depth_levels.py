"""Depth levels: every vendor's row shape read into checked ``(price, size)`` tuples.

:func:`levels` reads one side (Binance ``[["61837.63", "1.5"], ...]``, AllTick and iTick
objects with keys by name); :func:`level_sides` reads both sides of a decoded depth object
in one call. Binance-shaped sides are converted and range-checked by msgspec in C
(:data:`_SIDE`); anything out of the ordinary is read row by row (:func:`_row_levels`),
which gives the same levels or a ``bad_level`` naming the first bad row, so the fast path
takes exactly what the row check takes. Both are re-exported by
:mod:`feed.vendors._common`. Pure functions, no state.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Annotated

import msgspec

from feed.core.models import MalformedMessage
from feed.vendors._common import _PLAIN_DECIMAL, MAX_PRICE, MAX_SIZE

__all__ = ["levels", "level_sides"]

#: One side of depth levels as msgspec converts and checks it (:func:`_text_levels`).
_SIDE = tuple[tuple[Annotated[float, msgspec.Meta(gt=0.0, lt=MAX_PRICE)],
                    Annotated[float, msgspec.Meta(ge=0.0, lt=MAX_SIZE)]], ...]
_convert = msgspec.convert
#: (bids key, asks key) -> msgspec struct of both sides (:func:`level_sides`).
_SIDE_PAIRS: dict[tuple[str, str], type] = {}
_LIST_ROWS = {list}


def levels(
    rows: object,
    field: str,
    *,
    price: int | str = 0,
    size: int | str = 1,
    rank: str | None = None,
    descending: bool | None = None,
) -> tuple[tuple[float, float], ...]:
    """Return depth levels as ``((price, size), ...)``, checked.

    One parser for every vendor's row shape: Binance ``[["61837.63", "1.5"], ...]``
    (``price=0, size=1``), AllTick ``[{"price": .., "volume": ..}, ...]`` and iTick
    ``[{"po": 1, "p": .., "v": .., "o": ..}, ...]`` (keys by name).

    Binance-shaped rows (lists, ``price=0, size=1``, no ``rank``) are converted and
    range-checked in one msgspec call per side; a side it does not take (any row or value
    out of the ordinary) is read row by row, which gives the same levels or names the
    first bad row. The two read every value to the same float (but for a negative zero
    size, which may come back as 0.0: either deletes the level).

    Parameters
    ----------
    rows : object
        The wire list; None (a side the push left out) gives ``()``.
    field : str
        Its name, for error messages.
    price, size : int or str
        Position (list rows) or key (object rows) of the price and size. An object row
        without a size has size 0 (FX and metals carry no real volume); a list row must
        have both.
    rank : str, optional
        Key of the vendor's level rank (iTick ``po``): when every row has an int rank,
        rows are ordered by it.
    descending : bool, optional
        Otherwise order by price, descending for bids (True) or ascending for asks
        (False); None keeps the wire order (Binance sends best first).

    Returns
    -------
    tuple of (float, float)
        Price (quote currency, 0 < price < MAX_PRICE) and size (base units,
        0 <= size < MAX_SIZE; 0 deletes a level in a diff); text must be a plain decimal.

    Raises
    ------
    MalformedMessage
        ``bad_level`` for anything unusable: not a list, a row of the wrong shape, a
        missing price, a number that does not parse or is out of range.
    """
    if rows is None:
        return ()
    if type(rows) is not list:
        raise MalformedMessage("bad_level", f"{field} is {type(rows).__name__}, not a list")
    if type(price) is int and rank is None and rows:
        out = _text_levels(rows, price, size)
        if out is not None:
            if descending is not None:
                out = tuple(sorted(out, key=itemgetter(0), reverse=descending))
            return out
    return _row_levels(rows, field, price, size, rank, descending)


def _row_levels(rows: list, field: str, price: int | str, size: int | str, rank: str | None,
                descending: bool | None) -> tuple[tuple[float, float], ...]:
    # :func:`levels` row by row: every row shape, and the error naming the first bad row.
    row_type = list if type(price) is int else dict
    out = []
    ranks = []
    for row in rows:
        if type(row) is not row_type:
            raise MalformedMessage("bad_level", f"{field} row {row!r} is not a {row_type.__name__}")
        # float() inline rather than number(): this loop runs for every level of every
        # depth message. It takes the same JSON values (str, int, float) and bools are
        # refused below; NaN and infinities fail the range check.
        try:
            pv = row[price]
            qv = row[size] if row_type is list else row.get(size)
            p = float(pv)
            q = 0.0 if row_type is dict and (qv is None or qv == "") else float(qv)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError):
            raise MalformedMessage("bad_level", f"{field} level {row!r}") from None
        if (not (0.0 < p < MAX_PRICE and 0.0 <= q < MAX_SIZE) or type(pv) is bool or type(qv) is bool
                or (type(pv) is str and _PLAIN_DECIMAL.fullmatch(pv) is None)
                or (type(qv) is str and qv and _PLAIN_DECIMAL.fullmatch(qv) is None)):
            raise MalformedMessage("bad_level", f"{field} level {row!r}")
        out.append((p, q))
        if rank is not None:
            r = row.get(rank)
            ranks.append(r if type(r) is int else None)
    if ranks and None not in ranks:
        out = [level for _, level in sorted(zip(ranks, out), key=lambda k: k[0])]
    elif descending is not None:
        out.sort(key=lambda level: level[0], reverse=descending)
    return tuple(out)


def _text_levels(rows: list, price: int, size: int) -> tuple[tuple[float, float], ...] | None:
    # The common case in one C call: list rows [price, size] of JSON numbers or number
    # text in range (every Binance depth message), converted and range-checked by msgspec
    # (:data:`_SIDE`). None when anything is unusual (another row type, a row of another
    # length, text msgspec does not read as a JSON number, a value out of range, NaN): the
    # caller's row-by-row loop then accepts the same levels or names the first bad row.
    # msgspec reads number text by the JSON grammar (a subset of the plain decimals, read
    # to the same float) plus NaN and infinity words, which the ranges refuse; it may read
    # a negative zero size as 0.0 where float() gives -0.0 (both delete the level).
    if price != 0 or size != 1 or set(map(type, rows)) != _LIST_ROWS:
        return None
    try:
        return _convert(rows, _SIDE, strict=False)
    except (msgspec.ValidationError, ValueError):  # ValueError: text that is not UTF-8
        return None


def level_sides(d: dict, bids: str, asks: str) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Return ``(levels(d[bids], bids), levels(d[asks], asks))``: both sides of a decoded
    depth object with list rows (Binance ``b``/``a``, ``bids``/``asks``).

    Both sides are converted and range-checked in one msgspec call when every row is a
    ``[price, size]`` pair of numbers or number text in range (a whole diff in a few
    microseconds); anything else goes through :func:`levels` side by side, which gives the
    same levels or the same error.

    Parameters
    ----------
    d : dict
        A JSON object as a decoder returns it: rows are lists (a tuple row, which JSON
        cannot express, would be read like a list here where :func:`levels` refuses it).
    bids, asks : str
        Keys of the two sides.

    Returns
    -------
    tuple
        ``(bid levels, ask levels)``, each as :func:`levels` returns it.

    Raises
    ------
    KeyError
        If a side is missing (the adapter's ``missing_field``), bids first.
    MalformedMessage
        ``bad_level`` as :func:`levels`, naming the first bad row of the first bad side.
    """
    kind = _SIDE_PAIRS.get((bids, asks))
    if kind is None:
        kind = _SIDE_PAIRS[bids, asks] = msgspec.defstruct("Sides", [(bids, _SIDE), (asks, _SIDE)])
    try:
        pair = _convert(d, kind, strict=False)
    except (msgspec.ValidationError, ValueError):
        return levels(d[bids], bids), levels(d[asks], asks)
    return getattr(pair, bids), getattr(pair, asks)
