"""The background loop: a worker per target that discovers, selects, measures and records."""
