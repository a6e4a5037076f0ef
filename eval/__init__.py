"""Agreement statistics: pure functions on label tables (pandas) and arrays. No I/O, no plotting."""
