"""The bridge's FIFO ends never block: no reader, full pipe, no writer, partial frames."""
import os
import time

from tgvoice_bridge.fifo import NonBlockingFrameReader, NonBlockingWriter


def test_writer_without_reader_drops_counts_and_retries_at_most_every_100ms(run_dir):
    clock = [0.0]
    w = NonBlockingWriter(run_dir / "tg_input.raw", retry_s=0.1, clock=lambda: clock[0])
    opens = []
    real_open = os.open

    def counting_open(path, flags, *a):
        opens.append(path)
        return real_open(path, flags, *a)
    os.open = counting_open
    try:
        t = time.monotonic()
        for i in range(100):            # 1 s of frames at 10 ms
            assert w.write(b"\0" * 960) is False
            clock[0] += 0.01
        elapsed = time.monotonic() - t
    finally:
        os.open = real_open
    assert w.dropped_no_reader == 100 and w.written == 0
    assert 9 <= len(opens) <= 11, f"re-open attempts in 1 s: {len(opens)} (want ~10: every 100 ms)"
    assert elapsed < 0.5


def test_writer_delivers_once_a_reader_appears(run_dir):
    w = NonBlockingWriter(run_dir / "tg_input.raw", retry_s=0.0)
    assert not w.write(b"a" * 960)
    r = os.open(run_dir / "tg_input.raw", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert w.write(b"b" * 960)
        assert os.read(r, 4096) == b"b" * 960
    finally:
        os.close(r)
    # reader gone: EPIPE is a drop, not an exception or SIGPIPE death
    assert not w.write(b"c" * 960)
    assert w.dropped_no_reader == 2


def test_writer_with_full_pipe_drops_without_blocking(run_dir):
    path = run_dir / "tg_input.raw"
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)   # a reader that never reads
    try:
        w = NonBlockingWriter(path)
        t = time.monotonic()
        results = [w.write(bytes([i % 256]) * 960) for i in range(1000)]   # ~1 MB >> 64 KiB pipe
        worst = time.monotonic() - t
        assert worst < 1.0
        assert w.dropped_full > 0 and w.written > 0
        assert results[0] and not results[-1]
        assert w.written + w.dropped_full == 1000
        # what got through is whole frames, still aligned
        got = b""
        while True:
            try:
                chunk = os.read(r, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            got += chunk
        assert len(got) % 960 == 0 or w.pending
    finally:
        os.close(r)


def test_reader_without_writer_returns_none_at_once(run_dir):
    rd = NonBlockingFrameReader(run_dir / "tg_output.raw")
    t = time.monotonic()
    assert all(rd.read_frame() is None for _ in range(1000))
    assert time.monotonic() - t < 0.5
    rd.close()


def test_reader_keeps_partial_frames_and_drops_a_partial_when_the_writer_goes(run_dir):
    path = run_dir / "tg_output.raw"
    rd = NonBlockingFrameReader(path)
    assert rd.read_frame() is None
    w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"\x01" * 500)
    assert rd.read_frame() is None          # partial kept
    os.write(w, b"\x02" * 1000)
    assert rd.read_frame() == b"\x01" * 500 + b"\x02" * 460
    assert rd.read_frame() is None          # 540 bytes of the next frame buffered
    os.close(w)                              # writer gone mid-frame
    assert rd.read_frame() is None
    assert rd.discarded_partial_bytes == 540
    w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)   # writer returns: fresh, aligned
    os.write(w, b"\x03" * 960)
    assert rd.read_frame() == b"\x03" * 960
    os.close(w)
    rd.close()
