"""The embedded local exchange: a Binance-dialect server on loopback fed by a replay or a simulator."""
