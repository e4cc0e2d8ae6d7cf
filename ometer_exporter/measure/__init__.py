"""Measurement: one model on one target -> a ModelResult, by the rules in ``measure.model``."""
