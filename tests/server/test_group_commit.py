"""GroupCommit: items submitted during a write are written together, each gets its own outcome."""

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from podflame.server.group_commit import GroupCommit


class Recorder:
    """A write_group that records its groups; the first write waits for `release`."""

    def __init__(self, fail: Callable[[int], Exception | None] = lambda item: None) -> None:
        self.groups: list[list[int]] = []
        self.release = threading.Event()
        self.writing = threading.Event()
        self._fail = fail

    def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.writing.set()
        self.release.wait(timeout=30)
        self.groups.append(list(items))
        return [self._fail(item) or item * 10 for item in items]


def submit_all(
    commits: GroupCommit[int, int], items: list[int], first_writing: threading.Event
) -> dict[int, int | Exception]:
    """Submit items[0], and once it is being written the others, each from its own thread."""
    outcomes: dict[int, int | Exception] = {}

    def submit(item: int) -> None:
        try:
            outcomes[item] = commits.submit(item, weight=item)
        except Exception as error:  # the outcome under test
            outcomes[item] = error

    threads = [threading.Thread(target=submit, args=(item,)) for item in items]
    threads[0].start()
    assert first_writing.wait(timeout=30)
    for thread in threads[1:]:
        thread.start()
    return outcomes_after(threads, outcomes)


def outcomes_after(
    threads: list[threading.Thread], outcomes: dict[int, int | Exception]
) -> dict[int, int | Exception]:
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    return outcomes


def queued(commits: GroupCommit[int, int], count: int) -> None:
    deadline = time.monotonic() + 30
    while len(commits._queue) < count:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_lone_item_is_written_at_once_as_a_group_of_one() -> None:
    recorder = Recorder()
    recorder.release.set()
    commits: GroupCommit[int, int] = GroupCommit(recorder, max_items=8, max_weight=100)
    assert commits.submit(3) == 30
    assert commits.submit(4) == 40
    assert recorder.groups == [[3], [4]]


def test_items_submitted_during_a_write_are_written_together_next() -> None:
    recorder = Recorder()
    commits: GroupCommit[int, int] = GroupCommit(recorder, max_items=8, max_weight=100)
    threads_started = threading.Thread(target=lambda: (queued(commits, 5), recorder.release.set()))
    threads_started.start()
    outcomes = submit_all(commits, [1, 2, 3, 4, 5, 6], recorder.writing)
    threads_started.join()
    assert outcomes == {item: item * 10 for item in range(1, 7)}
    assert recorder.groups[0] == [1]
    assert sorted(recorder.groups[1]) == [2, 3, 4, 5, 6]
    assert len(recorder.groups) == 2


@pytest.mark.parametrize(("max_items", "max_weight"), [(2, 100), (8, 7)])
def test_groups_stay_within_their_bounds(max_items: int, max_weight: int) -> None:
    recorder = Recorder()  # an item weighs its value
    commits: GroupCommit[int, int] = GroupCommit(recorder, max_items, max_weight)
    releaser = threading.Thread(target=lambda: (queued(commits, 6), recorder.release.set()))
    releaser.start()
    outcomes = submit_all(commits, [1, 2, 3, 4, 5, 6, 20], recorder.writing)
    releaser.join()
    assert outcomes == {item: item * 10 for item in (1, 2, 3, 4, 5, 6, 20)}
    assert sorted(item for group in recorder.groups for item in group) == [1, 2, 3, 4, 5, 6, 20]
    for group in recorder.groups:
        assert len(group) <= max_items
        assert sum(group) <= max_weight or len(group) == 1  # an overweight item goes alone


def test_each_item_gets_its_own_outcome_and_a_failed_write_fails_its_whole_group() -> None:
    recorder = Recorder(fail=lambda item: ValueError(f"bad {item}") if item == 3 else None)
    commits: GroupCommit[int, int] = GroupCommit(recorder, max_items=8, max_weight=100)
    releaser = threading.Thread(target=lambda: (queued(commits, 3), recorder.release.set()))
    releaser.start()
    outcomes = submit_all(commits, [1, 2, 3, 4], recorder.writing)
    releaser.join()
    assert outcomes[1] == 10 and outcomes[2] == 20 and outcomes[4] == 40
    assert isinstance(outcomes[3], ValueError) and str(outcomes[3]) == "bad 3"

    def broken(items: Sequence[int]) -> list[int | Exception]:
        raise RuntimeError("the writer broke")

    commits = GroupCommit(broken, max_items=8, max_weight=100)
    with pytest.raises(RuntimeError, match="the writer broke"):
        commits.submit(1)
    with pytest.raises(RuntimeError, match="the writer broke"):
        commits.submit(2)  # the writer's role was handed back: no thread hangs


def test_a_wrong_number_of_outcomes_fails_the_group() -> None:
    commits: GroupCommit[int, int] = GroupCommit(lambda items: [], max_items=8, max_weight=100)
    with pytest.raises(RuntimeError, match="0 outcomes for a group of 1"):
        commits.submit(1)
