"""/metrics' format by ``Accept``: media types and q-values, as Prometheus negotiates."""

from __future__ import annotations

import pytest

from ometer_exporter.web.negotiate import accepts_gzip, media_ranges, wants_openmetrics

# What Prometheus sends (several versions), and what a browser or curl sends.
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
PROMETHEUS_TEXT_ONLY = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_media_ranges_keep_the_highest_q_and_ignore_other_parameters() -> None:
    assert media_ranges(PROMETHEUS_2) == {
        "application/openmetrics-text": 0.5,
        "text/plain": 0.3,
        "*/*": 0.2,
    }
    assert media_ranges("Text/Plain ; Q=0.7 ; charset=utf-8") == {"text/plain": 0.7}


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PROMETHEUS_3, True),
        (PROMETHEUS_2, True),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text;version=1.0.0,text/plain;q=0.5", True),
        (PROMETHEUS_TEXT_ONLY, False),
        (BROWSER, False),
        ("", False),
        ("*/*", False),  # not named: the text format is the default
        ("text/plain", False),
    ],
)
def test_scrapers_and_browsers(accept: str, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


def test_q_zero_means_not_acceptable() -> None:
    assert not wants_openmetrics("application/openmetrics-text;q=0")
    assert not wants_openmetrics("application/openmetrics-text;q=0.0,text/plain;q=0.1")
    assert wants_openmetrics("application/openmetrics-text;q=0.1,text/plain;q=0")


def test_the_highest_q_wins_whatever_the_order() -> None:
    assert not wants_openmetrics("application/openmetrics-text;q=0.4,text/plain;q=0.5")
    assert not wants_openmetrics("text/plain;q=0.5,application/openmetrics-text;q=0.4")
    assert wants_openmetrics("text/plain;q=0.4,application/openmetrics-text;q=0.5")
    # A tie goes to OpenMetrics, listed as welcome as the text format.
    assert wants_openmetrics("text/plain;q=0.5,application/openmetrics-text;q=0.5")
    assert wants_openmetrics("text/plain,application/openmetrics-text")


def test_wildcards_stand_for_text_plain_when_it_is_not_named() -> None:
    assert not wants_openmetrics("application/openmetrics-text;q=0.5,*/*;q=0.9")
    assert not wants_openmetrics("application/openmetrics-text;q=0.5,text/*;q=0.9")
    assert wants_openmetrics("application/openmetrics-text;q=0.5,text/plain;q=0.4,*/*;q=1")


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text;q=abc",
        "application/openmetrics-text;q=2",
        "application/openmetrics-text;q=-1",
        "openmetrics",
        "/openmetrics-text",
        "application/",
        ",,;;,",
    ],
)
def test_malformed_entries_are_left_out(accept: str) -> None:
    assert not wants_openmetrics(accept)
    assert not wants_openmetrics(accept + ",text/plain")


def test_a_malformed_entry_leaves_the_others_standing() -> None:
    assert wants_openmetrics("garbage;;q=x,application/openmetrics-text;q=0.5,text/plain;q=0.2")
    assert media_ranges("text/plain;q=oops,application/json;q=0.3") == {"application/json": 0.3}


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("identity", False),
        ("", False),
    ],
)
def test_gzip(accept_encoding: str, expected: bool) -> None:
    assert accepts_gzip(accept_encoding) is expected
