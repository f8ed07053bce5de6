"""The ``:`` command line's parsing, completion and history (no UI)."""

from __future__ import annotations

import pytest

from console.ui.command_line import Command, CommandError, History, completions, parse

HOSTS = ["local", "backup", "build-01"]
POOLS = [("local", "images"), ("local", "iso"), ("backup", "archive"),
         ("backup", "images"), ("build-01", "scratch")]


def run(line: str, current_host: str | None = None) -> Command:
    return parse(line, HOSTS, POOLS, current_host=current_host)


def test_plain_commands() -> None:
    assert run(":jobs") == Command("jobs")
    assert run("fixes") == Command("fixes")  # the colon is optional
    assert run(" :audit ") == Command("audit")
    assert run(":q") == Command("quit")
    assert run(":quit") == Command("quit")


def test_host_by_name_and_unique_prefix() -> None:
    assert run(":host backup") == Command("host", host="backup")
    assert run(":host bu") == Command("host", host="build-01")  # "backup" has no "bu"
    with pytest.raises(CommandError, match="no host 'nas' in the config; hosts: local, "
                                           "backup, build-01"):
        run(":host nas")


def test_ambiguous_host_prefix_names_the_candidates() -> None:
    with pytest.raises(CommandError, match="could be backup, build-01"):
        parse(":host b", HOSTS, POOLS)


def test_pool_by_name_host_pool_and_prefix() -> None:
    assert run(":pool iso") == Command("pool", host="local", pool="iso")
    assert run(":pool backup:images") == Command("pool", host="backup", pool="images")
    assert run(":pool scr") == Command("pool", host="build-01", pool="scratch")


def test_pool_on_two_hosts_needs_its_host_unless_shown() -> None:
    with pytest.raises(CommandError, match="could be local:images, backup:images: say "
                                           "HOST:POOL"):
        run(":pool images")
    assert run(":pool images", current_host="backup") == \
        Command("pool", host="backup", pool="images")


def test_unknown_pool_and_host_in_host_pool() -> None:
    with pytest.raises(CommandError, match="host backup has no pool 'iso'; its pools: "
                                           "archive, images"):
        run(":pool backup:iso")
    with pytest.raises(CommandError, match="no host 'nas'"):
        run(":pool nas:images")
    with pytest.raises(CommandError, match="no pool 'tmp' in the config"):
        run(":pool tmp")


def test_unknown_command_names_what_is_known_in_one_line() -> None:
    with pytest.raises(CommandError) as caught:
        run(":vol disk")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("unknown :vol; try ")
    for known in (":host", ":pool", ":jobs", ":fixes", ":audit", ":q"):
        assert known in message


def test_missing_and_extra_words() -> None:
    with pytest.raises(CommandError, match=":pool needs a name"):
        run(":pool")
    with pytest.raises(CommandError, match=":jobs takes no name"):
        run(":jobs now")
    with pytest.raises(CommandError, match="no command; try :host"):
        run(":")


def test_completion_of_words_hosts_and_pools() -> None:
    assert completions(":", HOSTS, POOLS) == [":host ", ":pool ", ":jobs", ":fixes",
                                              ":audit", ":quit"]
    assert completions(":p", HOSTS, POOLS) == [":pool "]
    assert completions(":host b", HOSTS, POOLS) == [":host backup", ":host build-01"]
    # images is on two hosts: offered with its host; a unique pool by its name
    assert completions(":pool ", HOSTS, POOLS) == [
        ":pool local:images", ":pool iso", ":pool archive", ":pool backup:images",
        ":pool scratch"]
    assert completions(":pool backup:", HOSTS, POOLS) == [":pool backup:archive",
                                                          ":pool backup:images"]
    assert completions(":jobs x", HOSTS, POOLS) == []


def test_history_walks_like_a_shell() -> None:
    history = History()
    assert history.older(":dr") == ":dr"  # nothing yet
    for line in (":jobs", ":pool iso", ":jobs"):
        history.add(line)
    assert history.lines == [":pool iso", ":jobs"]  # a repeat moves to the end
    assert history.older(":dr") == ":jobs"
    assert history.older(":jobs") == ":pool iso"
    assert history.older(":pool iso") == ":pool iso"  # the oldest stays
    assert history.newer() == ":jobs"
    assert history.newer() == ":dr"  # the draft comes back
    assert history.newer() is None


def test_history_is_bounded() -> None:
    history = History(limit=3)
    for n in range(5):
        history.add(f":pool p{n}")
    assert history.lines == [":pool p2", ":pool p3", ":pool p4"]
