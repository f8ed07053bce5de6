"""The monitoring logic below the UI: alerts once per crossing, the events diffs, the
usage history in the cache (bounded) and the "full in N days" estimate."""

from __future__ import annotations

from pathlib import Path

from backends.model import Capacity, Health, HealthState
from console.cache import USAGE_SAMPLES, Cache, HostRow, PoolRow, UsageSample
from console.config import Thresholds
from console.jobs.journal import JobState, Journal
from console.monitoring import (
    DAY,
    EVENTS_KEPT,
    TREND_SPAN,
    Alerts,
    Event,
    EventLog,
    Level,
    Monitor,
    full_in_days,
    health_events,
    host_events,
    job_events,
    level_of,
    trend_words,
)
from tests.conftest_ui import IMAGES, NOW, OK, fill, volume

G = 1 << 30
LIMITS = Thresholds(warning=0.5, critical=0.9)


def pool_row(allocation: int, *, capacity: int = 100 * G, name: str = "images",
             error: str | None = None) -> PoolRow:
    return PoolRow("local", name, "dir", "/srv/images", capacity, allocation,
                   capacity - allocation, 0, 1, NOW, error)


def test_levels_follow_the_thresholds() -> None:
    assert level_of(100, 49, LIMITS) == Level.OK
    assert level_of(100, 50, LIMITS) == Level.WARNING
    assert level_of(100, 95, LIMITS) == Level.CRITICAL
    assert level_of(0, 0, LIMITS) == Level.OK  # never scanned: no alert


def test_an_alert_is_raised_once_per_crossing_and_cleared_below() -> None:
    alerts = Alerts(lambda host, pool: LIMITS)
    assert alerts.update([pool_row(10 * G)], NOW) == []
    [raised] = alerts.update([pool_row(60 * G)], NOW + 1)
    assert (raised.before, raised.after, raised.raised) == (Level.OK, Level.WARNING, True)
    assert "host 'local', pool 'images': 60% used" in raised.text
    assert alerts.update([pool_row(61 * G)], NOW + 2) == []  # still above: no news
    assert [a.since for a in alerts.active()] == [NOW + 1]
    [worse] = alerts.update([pool_row(95 * G)], NOW + 3)
    assert worse.after == Level.CRITICAL and "no new job may take space" in worse.text
    assert alerts.update([pool_row(95 * G, error="host down")], NOW + 4) == []
    [cleared] = alerts.update([pool_row(20 * G)], NOW + 5)
    assert (cleared.after, cleared.raised) == (Level.OK, False)
    assert "back below" in cleared.text and alerts.active() == []
    assert cleared.summary == "local:images back below warning (20% used)"
    assert worse.summary == "local:images critical: 95% used (threshold 90%)"
    assert alerts.update([pool_row(20 * G)], NOW + 6) == []


def test_alerts_are_sorted_critical_first() -> None:
    alerts = Alerts(lambda host, pool: LIMITS)
    alerts.update([pool_row(60 * G, name="a"), pool_row(95 * G, name="b"),
                   pool_row(70 * G, name="c")], NOW)
    assert [a.pool for a in alerts.active()] == ["b", "c", "a"]


def test_the_events_log_is_bounded_newest_first() -> None:
    log = EventLog()
    for i in range(EVENTS_KEPT + 50):
        log.add([Event(NOW + i, "job", f"event {i}")])
    events = log.events()
    assert len(events) == EVENTS_KEPT
    assert events[0].text == f"event {EVENTS_KEPT + 49}" and events[-1].text == "event 50"


def test_hosts_going_offline_and_coming_back() -> None:
    def host(state: str, error: str | None = None) -> HostRow:
        return HostRow("nas", "ssh://nas", state, error, None)

    seen: dict[str, str] = {}
    assert host_events(seen, [host("online")], NOW) == []
    assert host_events(seen, [host("connecting")], NOW) == []
    [down] = host_events(seen, [host("offline", "connection refused")], NOW)
    assert down.text == "host 'nas' went offline: connection refused"
    assert host_events(seen, [host("offline")], NOW) == []
    [back] = host_events(seen, [host("online")], NOW)
    assert back.text == "host 'nas' is back online"


def test_health_changes_of_volumes_seen_twice() -> None:
    before = {("local", "images", "a"): "optimized", ("local", "images", "b"): "optimized"}
    after = {("local", "images", "a"): "broken", ("local", "images", "c"): "broken"}
    [event] = health_events(before, after, NOW)
    assert event.text == "host 'local', pool 'images', volume 'a': optimized -> broken"
    assert event.severity == "error"


def test_job_events_from_another_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    mine, theirs = Journal(path), Journal(path)
    old = theirs.submit("create", {"host": "local", "pool": "images", "volume": "old",
                                   "format": "raw", "capacity": G, "backing": None},
                        "local", "images", "old")
    theirs.finish(old.id, JobState.DONE)
    first = {j.id: j.state for j in mine.jobs()}
    assert job_events(None, mine.jobs(), NOW) == []  # the first look only learns
    job = theirs.submit("create", {"host": "local", "pool": "images", "volume": "new",
                                   "format": "raw", "capacity": G, "backing": None},
                        "local", "images", "new")
    [started] = job_events(first, mine.jobs(), NOW)
    assert started.text.startswith(f"job {job.id} (") and started.text.endswith("started")
    running = {j.id: j.state for j in mine.jobs()}
    theirs.finish(job.id, JobState.FAILED, "disk full")
    [ended] = job_events(running, mine.jobs(), NOW)
    assert ended.text.endswith("failed: disk full") and ended.severity == "error"


def samples(*allocations: int, capacity: int = 100 * G, step: float = DAY) -> list[UsageSample]:
    return [UsageSample(NOW + i * step, capacity, a) for i, a in enumerate(allocations)]


def test_full_in_days_by_a_linear_fit() -> None:
    assert full_in_days(samples(10 * G, 20 * G, 30 * G, 40 * G)) == 6.0
    assert full_in_days(samples(40 * G, 30 * G)) is None  # shrinking
    assert full_in_days(samples(40 * G, 40 * G)) is None  # flat
    assert full_in_days(samples(40 * G)) is None  # one sample
    assert trend_words(samples(10 * G, 20 * G, 30 * G, 40 * G)) == \
        "+10G/day over 4 samples: full in 6 days"
    assert trend_words(samples(40 * G, 30 * G)).endswith("not growing")
    assert trend_words(samples(10 * G, 55 * G)) == "+45G/day over 2 samples: full in 1 day"


def test_no_trend_from_minutes_of_history() -> None:
    # A copy landing between two refreshes a minute apart is not "full in less than a
    # day": the words say how much history there is, and no estimate.
    assert trend_words(samples(10 * G, 20 * G, 30 * G, step=60)) == \
        "3 samples over 2m: a trend after 1h"
    assert trend_words(samples(10 * G, 20 * G, step=TREND_SPAN)).endswith("full in less than a day")


def test_usage_history_is_recorded_per_refresh_and_bounded() -> None:
    cache = Cache(None)
    vols = [(volume(IMAGES, "a.qcow2"), OK)]
    total = USAGE_SAMPLES * 3
    for i in range(total):
        fill(cache, IMAGES, vols, capacity=Capacity(100 * G, i * 1000, 100 * G, 0),
             seen_at=NOW + i * 60)
        assert len(cache.usage_history("local", "images")) <= USAGE_SAMPLES
    history = cache.usage_history("local", "images")
    assert len(history) > USAGE_SAMPLES // 2
    assert history[-1] == UsageSample(NOW + (total - 1) * 60, 100 * G, (total - 1) * 1000)
    assert history[0].at < NOW + total * 60 / 2  # old samples thinned, not dropped
    assert [s.at for s in history] == sorted(s.at for s in history)
    cache.forget_pool("local", "images")
    assert cache.usage_history("local", "images") == []


def test_a_cache_of_the_same_version_gains_the_usage_table(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache.db")
    cache.conn.execute("DROP TABLE usage")
    cache.close()
    again = Cache(tmp_path / "cache.db")
    fill(again, IMAGES, [(volume(IMAGES, "a.qcow2"), OK)],
         capacity=Capacity(100 * G, G, 99 * G, 0))
    assert len(again.usage_history("local", "images")) == 1


def test_the_monitor_reports_each_change_once(tmp_path: Path) -> None:
    cache = Cache(None)
    journal = Journal(tmp_path / "journal.db")
    monitor = Monitor(cache, lambda host, pool: LIMITS, journal=journal)
    vols = [(volume(IMAGES, "a.qcow2"), OK)]
    fill(cache, IMAGES, vols, capacity=Capacity(100 * G, 10 * G, 90 * G, 0))
    cache.record_host("local", "local", "online")
    first = monitor.poll(NOW)
    assert (first.alerts, first.changes, first.events) == ([], [], [])
    broken = Health(HealthState.BROKEN, ("backing file gone",))
    fill(cache, IMAGES, [(volume(IMAGES, "a.qcow2"), broken)],
         capacity=Capacity(100 * G, 60 * G, 40 * G, 0), seen_at=NOW)
    second = monitor.poll(NOW + 1)
    assert [a.level for a in second.alerts] == [Level.WARNING]
    assert sorted(e.kind for e in second.events) == ["alert", "health"]
    third = monitor.poll(NOW + 2)
    assert (third.changes, third.events) == ([], [])
    assert len(third.alerts) == 1 and len(monitor.log) == 2


def test_pool_not_in_the_config_is_skipped() -> None:
    def thresholds(host: str, pool: str) -> Thresholds:
        raise KeyError(host)

    alerts = Alerts(thresholds)
    assert alerts.update([pool_row(99 * G)], NOW) == [] and alerts.active() == []
