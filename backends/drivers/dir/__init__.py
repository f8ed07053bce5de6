"""Directory pools: ``driver.DirDriver`` (files over any transport)."""
