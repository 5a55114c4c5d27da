"""Reading a spot node's interruption notice from the instance metadata service
(``costsched/scheduler/spot_notice.py``), against a local IMDSv2 stand-in."""

from __future__ import annotations

import threading

from costsched.scheduler.spot_notice import Notice, NoticeLoop, node_url, read_notice
from tests.support.imds import FakeImds


def test_a_notice_is_read_with_a_session_token_and_404_means_none():
    with FakeImds() as imds:
        url = node_url(imds.url, "a")
        assert read_notice(url) == Notice(reachable=True)
        imds.notify("a")
        notice = read_notice(url)
        assert (notice.action, notice.time) == ("terminate", "2026-12-03T08:22:00Z")
        assert read_notice(node_url(imds.url, "b")) == Notice(reachable=True), "per node"
        assert imds.reads == {"a": 2, "b": 1}


def test_no_metadata_service_reads_as_unreachable_and_the_loop_gives_up():
    assert read_notice("http://127.0.0.1:9", timeout_s=0.5) == Notice(reachable=False)
    reads = []

    def read(url: str) -> Notice:
        reads.append(url)
        return Notice(reachable=False)

    loop = NoticeLoop("x", poll_s=0.01, unreachable_tries=3, read=read).start()
    loop._thread.join(5.0)
    assert not loop._thread.is_alive() and len(reads) == 3


def test_the_loop_keeps_reading_until_told_and_calls_back_once():
    told = threading.Event()
    with FakeImds() as imds:
        loop = NoticeLoop(node_url(imds.url, "n"), poll_s=0.01, on_notice=told.set).start()
        while imds.reads.get("n", 0) < 3:
            loop._thread.join(0.01)
        assert loop.latest.action is None and not told.is_set()
        imds.notify("n", "stop")
        assert told.wait(5.0)
        loop._thread.join(5.0)
        assert loop.latest.action == "stop" and not loop._thread.is_alive()
        loop.close()
