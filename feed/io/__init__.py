"""I/O shells around the pure core: the feed client thread, the engine worker, the store, recordings."""
