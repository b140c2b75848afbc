"""The embedded local exchange: a Binance-dialect server on loopback fed by a replay or a simulator.

Modules: ``server`` (:class:`EmbeddedExchange`, the server thread and its public surface),
``dialect`` (Binance's wire rules, server side), ``fanout`` (routing to subscribed
connections with backpressure), ``faults`` (fault injection), ``replay_source`` (recorded
files), ``sim_source`` (the simulator on the wall clock, and its independent kline
builder), ``simulator`` (the pure seeded market), ``instruments`` (tick/lot sizes and exact
formatting), ``loopback`` (the server-thread base shared with the test fakes).
"""
