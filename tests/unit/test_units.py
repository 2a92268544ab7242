import pytest

from scheduler.units import check_int, format_duration, parse_duration, parse_size

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
    ("1d2h3m4s", 93784), ("90", 90), (45, 45), (1.5, 1.5), ("0.5s", 0.5),
])
def test_parse_duration_accepts_documented_forms(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5x", "", "m", "1m1h", "-5s", -1, True, None, "1 h"])
def test_parse_duration_rejects_with_hint(bad):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert str(info.value) == f"not a duration: {bad!r} (use e.g. 30s, 5m, 2h, 1d)"


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (30, "30s"), (300, "5m"), (5400, "1h30m"), (86400, "1d"), (90061, "1d1h1m1s"),
    (0.5, "0.5s"),
])
def test_format_duration_round_trips(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, size", [
    ("10MiB", 10 * 1024 * 1024), ("512KiB", 512 * 1024), ("1GiB", 1 << 30), ("100B", 100),
    (4096, 4096), ("1MB", 1_000_000), ("77", 77),
])
def test_parse_size_accepts_documented_forms(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["10 furlongs", "MiB", -1, "1.5MiB", False])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError, match=r"^not a size: "):
        parse_size(bad)


@pytest.mark.parametrize("huge", ["99999999999d", 1e308, float("inf"), 10**400, "9" * 400,
                                  100 * 365 * 86400 + 1])
def test_parse_duration_bounds_at_100_years(huge):
    with pytest.raises(ValueError, match=r"^duration .* is too long \(at most 100 years\)$"):
        parse_duration(huge)
    assert parse_duration(100 * 365 * 86400) == 100 * 365 * 86400


def test_parse_duration_rejects_nan():
    with pytest.raises(ValueError, match=r"^not a duration: nan"):
        parse_duration(float("nan"))


@pytest.mark.parametrize("huge", [10**30, "99999999TiB", 2**50 + 1])
def test_parse_size_bounds_at_1_pib(huge):
    with pytest.raises(ValueError, match=r"^size .* is too large \(at most 1PiB\)$"):
        parse_size(huge)


@pytest.mark.parametrize("value, ok", [(0, True), (2**63 - 1, True), (2**63, False), (-1, False),
                                       (True, False), (1.0, False), ("1", False)])
def test_check_int_bounds(value, ok):
    if ok:
        assert check_int(value) == value
    else:
        with pytest.raises(ValueError, match=r"^must be an integer from 0 to "):
            check_int(value)
