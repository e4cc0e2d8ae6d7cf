"""Configuration: the settings (plain values), their loading from file, environment and flags,
and the checker every input goes through."""
