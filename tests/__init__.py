"""pykubeproxy's tests: a package, so that every helper is imported as `tests.<layer>.<module>`."""
