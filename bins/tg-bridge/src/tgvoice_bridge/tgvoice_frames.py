"""Read and write tgvoice frames (protocol v1, see fifo-layout.md §2). Stdlib only.

    from tgvoice_frames import read_frame, write_event, write_audio
    write_event(sys.stdout.buffer, {"type": "call-start", "call": "42"})
    while (frame := read_frame(sys.stdin.buffer)) is not None:
        kind, meta, data = frame   # ("event", {...}, None) or ("audio", {...}, pcm bytes)
"""
import json, struct

HEADER = struct.Struct("<4sBBHI")      # magic, version, kind, flags, payload length
AUDIO = struct.Struct("<IBBHQQQ")      # rate, channels, format, reserved, turn, capture_us, index
MAGIC, VERSION, AUDIO_KIND, EVENT_KIND, MAX_PAYLOAD = b"TGVF", 1, 1, 2, 1 << 20


def write_event(out, event):
    payload = json.dumps(event, separators=(",", ":")).encode()
    out.write(HEADER.pack(MAGIC, VERSION, EVENT_KIND, 0, len(payload)) + payload)


def write_audio(out, pcm, rate=48000, turn=0, capture_us=0, index=0, channels=1):
    meta = AUDIO.pack(rate, channels, 1, 0, turn, capture_us, index)
    out.write(HEADER.pack(MAGIC, VERSION, AUDIO_KIND, 0, len(meta) + len(pcm)) + meta + pcm)


def read_frame(inp):
    """Next frame, or None at end of stream. Raises ValueError on a bad frame."""
    head = inp.read(HEADER.size)
    if not head:
        return None
    if len(head) < HEADER.size:
        raise ValueError("stream ended inside a frame header")
    magic, version, kind, flags, length = HEADER.unpack(head)
    if magic != MAGIC or version != VERSION or flags or kind not in (1, 2) or length > MAX_PAYLOAD:
        raise ValueError(f"not a tgvoice v1 frame header: {head!r} (is this raw PCM? use tgcat)")
    payload = inp.read(length)
    if len(payload) < length:
        raise ValueError("stream ended inside a frame")
    if kind == EVENT_KIND:
        return "event", json.loads(payload.decode("utf-8")), None
    rate, channels, fmt, _, turn, capture_us, index = AUDIO.unpack_from(payload)
    meta = dict(rate=rate, channels=channels, turn=turn, capture_us=capture_us, index=index)
    return "audio", meta, payload[AUDIO.size:]
