"""The tickscope dashboard: Dash app, layout, callbacks, figures, HTTP API, runtime and CLI."""
