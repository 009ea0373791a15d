"""Voice-note audio: OGG/Opus in and out, with ffmpeg (Debian `ffmpeg`, in
scripts/provision/base.apt).

Why ffmpeg rather than opus/ogg wheels from PyPI: it is already provisioned for the project,
decodes whatever a client sends (Telegram voice notes are OGG/Opus, but forwarded audio can be
anything), resamples to 48 kHz in the same step, and its libopus encoder writes the OGG/Opus
mono 48 kHz that Telegram shows as a voice note. PyPI's `opuslib` only wraps the system
libopus (no OGG container), so it would mean writing an OGG page muxer and demuxer by hand.

The waveform Telegram draws for a voice note is 100 5-bit values (0–31), packed LSB-first;
``waveform()`` computes it from the reply so the note shows its shape at once.
"""
import subprocess

RATE = 48000
BYTES_PER_SECOND = RATE * 2      # s16le mono


class Undecodable(Exception):
    """The file is not audio ffmpeg can decode (message says why)."""


def decode(data, max_seconds):
    """OGG/Opus (or any audio ffmpeg reads) → raw s16le 48 kHz mono, at most ``max_seconds`` + 1 s
    (enough to tell that a message is over the limit without decoding all of it)."""
    try:
        p = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", "pipe:0", "-t", f"{max_seconds + 1:.3f}",
                            "-vn", "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"],
                           input=data, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise Undecodable("ffmpeg is not installed (apt-get install ffmpeg, or scripts/setup apt)") from None
    except subprocess.TimeoutExpired:
        raise Undecodable("ffmpeg took over 60 s to decode it") from None
    pcm = p.stdout[: len(p.stdout) // 2 * 2]
    if p.returncode != 0 or not pcm:
        why = p.stderr.decode(errors="replace").strip().splitlines()
        raise Undecodable(why[-1] if why else "no audio in it")
    return pcm


ENCODE = ["ffmpeg", "-v", "error", "-nostdin", "-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0",
          "-c:a", "libopus", "-b:a", "32k", "-application", "voip", "-f", "ogg", "pipe:1"]


def encode(pcm):
    """Raw s16le 48 kHz mono → OGG/Opus bytes (a Telegram voice note)."""
    p = subprocess.run(ENCODE, input=pcm, capture_output=True, timeout=60)
    if p.returncode != 0 or not p.stdout:
        raise RuntimeError(f"ffmpeg could not encode the reply: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


class StreamEncoder:
    """``encode`` while the audio is still coming: ``feed`` pieces as they are synthesised,
    ``finish`` returns the OGG/Opus bytes moments after the last piece."""

    def __init__(self):
        import threading
        self.proc = subprocess.Popen(ENCODE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = []
        self.reader = threading.Thread(target=lambda: self.out.append(self.proc.stdout.read()), daemon=True)
        self.reader.start()

    def feed(self, pcm):
        self.proc.stdin.write(pcm)

    def finish(self):
        self.proc.stdin.close()
        self.reader.join(60)
        err = self.proc.stderr.read()
        self.proc.wait(60)
        if self.proc.returncode != 0 or not self.out or not self.out[0]:
            raise RuntimeError(f"ffmpeg could not encode the reply: {err.decode(errors='replace').strip()}")
        return self.out[0]

    def abort(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def seconds(pcm):
    return len(pcm) / BYTES_PER_SECOND


def waveform(pcm, bars=100):
    """Telegram's voice-note waveform: ``bars`` peak levels scaled to 0–31, 5 bits each, packed
    LSB first."""
    import array
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    if not samples:
        return b""
    step = max(1, len(samples) // bars)
    peaks = []
    for i in range(0, min(len(samples), step * bars), step):
        window = samples[i:i + step]                    # max/min of an array run in C
        peaks.append(max(max(window), -min(window)))
    top = max(peaks) or 1
    levels = [min(31, round(p * 31 / top)) for p in peaks]
    bits, nbits, out = 0, 0, bytearray()
    for v in levels:
        bits |= v << nbits
        nbits += 5
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 0xFF)
    return bytes(out)
