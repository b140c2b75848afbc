"""Pure market logic: value types, bars, books, market state. No threads, sockets, files, queues or wall clock."""
