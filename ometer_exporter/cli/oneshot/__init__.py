"""`ometer-exporter bench`: one benchmark cycle in the terminal, with OMeter's flags (`run`)."""
