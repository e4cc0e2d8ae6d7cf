"""The command line: `serve` (the default), `--config.check`, and the one-shot `bench`."""
