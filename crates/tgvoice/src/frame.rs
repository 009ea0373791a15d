//! The frame codec (protocol v1, byte layout in `fifo-layout.md` §2).
//!
//! [`encode`] turns a [`Frame`] into bytes; [`FrameDecoder`] is a streaming decoder that takes
//! arbitrary chunks (a frame may be split across reads) and yields frames or [`DecodeError`]s.
//! It never panics on input and never allocates more than [`MAX_PAYLOAD`] from an untrusted
//! length: after a bad header it resynchronises on the next valid header.

use crate::event::Event;

pub const MAGIC: [u8; 4] = *b"TGVF";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 12;
pub const AUDIO_HEADER_LEN: usize = 32;
/// Largest payload a reader accepts (1 MiB).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Audio sample rates a reader accepts, in Hz. Below 8 kHz a frame would stand for minutes of
/// audio (a 600-byte frame declaring 1 Hz is 5 minutes once resampled to 16 kHz).
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;
/// Most channels an audio frame may declare.
pub const MAX_CHANNELS: u8 = 8;

pub const KIND_AUDIO: u8 = 1;
pub const KIND_EVENT: u8 = 2;
pub const FORMAT_S16LE: u8 = 1;

/// A block of audio with the metadata every stage needs to compute latency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    pub sample_rate: u32,
    pub channels: u8,
    /// Turn this audio belongs to; 0 = not in a turn.
    pub turn: u64,
    /// Wall-clock capture time of the first sample, µs since the Unix epoch.
    pub capture_us: u64,
    /// Running index of the first sample in this stream.
    pub sample_index: u64,
    /// Interleaved s16 samples.
    pub samples: Vec<i16>,
}

impl AudioFrame {
    pub fn mono(sample_rate: u32, samples: Vec<i16>) -> Self {
        AudioFrame { sample_rate, channels: 1, turn: 0, capture_us: 0, sample_index: 0, samples }
    }

    /// Duration in microseconds.
    pub fn duration_us(&self) -> u64 {
        let per_channel = self.samples.len() as u64 / self.channels.max(1) as u64;
        per_channel * 1_000_000 / self.sample_rate.max(1) as u64
    }

    /// The samples as little-endian bytes (what raw-PCM consumers such as ffplay want).
    pub fn pcm_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.samples.len() * 2);
        for s in &self.samples {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Audio(AudioFrame),
    Event(Event),
}

impl Frame {
    /// Urgent frames (speech-start, cancel) overtake queued work (fifo-layout.md §2).
    pub fn is_urgent(&self) -> bool {
        matches!(self, Frame::Event(e) if e.is_urgent())
    }

    pub fn turn(&self) -> Option<u64> {
        match self {
            Frame::Audio(a) if a.turn != 0 => Some(a.turn),
            Frame::Audio(_) => None,
            Frame::Event(e) => e.turn,
        }
    }
}

/// Serialise a frame this program built itself. Panics if it is over [`MAX_PAYLOAD`]; anything
/// that carries input onwards (events can grow when re-encoded) uses [`encode_into`].
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = encode_into(frame, &mut out) {
        panic!("{e}");
    }
    out
}

/// A frame whose payload would be over [`MAX_PAYLOAD`]: no reader would accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub payload: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "frame payload of {} bytes is over the {MAX_PAYLOAD}-byte cap", self.payload)
    }
}

impl std::error::Error for TooLarge {}

/// Append a frame to `out`, or leave `out` unchanged if its payload would be over the cap.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) -> Result<(), TooLarge> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    match frame {
        Frame::Audio(a) => {
            out.push(KIND_AUDIO);
            out.extend_from_slice(&0u16.to_le_bytes());
            let len = AUDIO_HEADER_LEN + a.samples.len() * 2;
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.extend_from_slice(&a.sample_rate.to_le_bytes());
            out.push(a.channels);
            out.push(FORMAT_S16LE);
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&a.turn.to_le_bytes());
            out.extend_from_slice(&a.capture_us.to_le_bytes());
            out.extend_from_slice(&a.sample_index.to_le_bytes());
            for s in &a.samples {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        Frame::Event(e) => {
            out.push(KIND_EVENT);
            out.extend_from_slice(&0u16.to_le_bytes());
            let json = serde_json::to_vec(e).expect("events always serialise");
            out.extend_from_slice(&(json.len() as u32).to_le_bytes());
            out.extend_from_slice(&json);
        }
    }
    let payload = out.len() - start - HEADER_LEN;
    if payload > MAX_PAYLOAD {
        out.truncate(start);
        return Err(TooLarge { payload });
    }
    Ok(())
}

/// Why some input bytes were not a frame. Each says what was seen and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Bytes that do not start a frame were skipped while looking for the next header.
    Garbage { skipped: usize, looks_like: InputGuess },
    /// A header with a length over the cap.
    Oversize { length: u64 },
    /// A header with an unknown version, kind or non-zero flags.
    BadHeader { version: u8, kind: u8, flags: u16 },
    /// A well-framed payload that does not parse (bad audio header, bad JSON/UTF-8).
    BadPayload { kind: u8, reason: String },
    /// The stream ended (or the writer went away) in the middle of a frame.
    Truncated { have: usize, need: usize },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Garbage { skipped, looks_like } => write!(
                f,
                "skipped {skipped} bytes that are not tgvoice frames (they look like {}); {}",
                looks_like.describe(),
                looks_like.advice()
            ),
            DecodeError::Oversize { length } => write!(
                f,
                "frame header claims a {length}-byte payload, over the {MAX_PAYLOAD}-byte cap; \
                 skipping to the next frame"
            ),
            DecodeError::BadHeader { version, kind, flags } => write!(
                f,
                "frame header with version {version}, kind {kind}, flags {flags} \
                 (expected version {VERSION}, kind 1 or 2, flags 0); skipping to the next frame"
            ),
            DecodeError::BadPayload { kind, reason } => {
                let what = if *kind == KIND_AUDIO { "audio" } else { "event" };
                write!(f, "dropped an {what} frame: {reason}")
            }
            DecodeError::Truncated { have, need } => write!(
                f,
                "stream ended inside a frame ({have} of {need} bytes); dropped the partial frame"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A guess at what non-frame bytes are, so errors can say "pipe it through tgcat".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputGuess {
    Wav,
    Text,
    RawPcm,
    Binary,
}

impl InputGuess {
    pub fn of(bytes: &[u8]) -> InputGuess {
        if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE" {
            return InputGuess::Wav;
        }
        if bytes.is_empty() {
            return InputGuess::Binary;
        }
        if let Ok(s) = std::str::from_utf8(bytes) {
            let printable = s.chars().filter(|c| !c.is_control() || c.is_whitespace()).count();
            if printable * 10 >= s.chars().count() * 9 {
                return InputGuess::Text;
            }
        }
        if looks_like_pcm(bytes) {
            return InputGuess::RawPcm;
        }
        InputGuess::Binary
    }

    pub fn describe(&self) -> &'static str {
        match self {
            InputGuess::Wav => "a WAV file",
            InputGuess::Text => "text",
            InputGuess::RawPcm => "raw 16-bit PCM audio",
            InputGuess::Binary => "random binary data",
        }
    }

    pub fn advice(&self) -> &'static str {
        match self {
            InputGuess::Wav | InputGuess::RawPcm => {
                "audio must be framed first: pipe it through tgcat (e.g. `tgcat FILE | ...`)"
            }
            InputGuess::Text => {
                "text is not a frame stream; tts-writer accepts plain text lines, other stages need frames"
            }
            InputGuess::Binary => "expected tgvoice frames (magic \"TGVF\"); see fifo-layout.md",
        }
    }
}

/// Audio tends to move smoothly: consecutive s16 samples differ by much less than random data.
fn looks_like_pcm(bytes: &[u8]) -> bool {
    let samples: Vec<i32> =
        bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i32).collect();
    if samples.len() < 16 {
        return false;
    }
    let mean_step: f64 = samples.windows(2).map(|w| (w[1] - w[0]).unsigned_abs() as f64).sum::<f64>()
        / (samples.len() - 1) as f64;
    // Uniform random i16 pairs differ by ~21845 on average; speech/silence by a few hundred.
    mean_step < 6000.0
}

fn parse_header(h: &[u8]) -> Result<(u8, usize), DecodeError> {
    let version = h[4];
    let kind = h[5];
    let flags = u16::from_le_bytes([h[6], h[7]]);
    let length = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as u64;
    if version != VERSION || !(kind == KIND_AUDIO || kind == KIND_EVENT) || flags != 0 {
        return Err(DecodeError::BadHeader { version, kind, flags });
    }
    if length as usize > MAX_PAYLOAD {
        return Err(DecodeError::Oversize { length });
    }
    Ok((kind, length as usize))
}

fn parse_payload(kind: u8, p: &[u8]) -> Result<Frame, DecodeError> {
    let bad = |reason: String| DecodeError::BadPayload { kind, reason };
    if kind == KIND_EVENT {
        let text = std::str::from_utf8(p).map_err(|e| bad(format!("payload is not UTF-8 ({e})")))?;
        let event: Event = serde_json::from_str(text)
            .map_err(|e| bad(format!("payload is not a JSON event object with a \"type\" ({e})")))?;
        return Ok(Frame::Event(event));
    }
    if p.len() < AUDIO_HEADER_LEN {
        return Err(bad(format!("audio payload of {} bytes is shorter than its 32-byte header", p.len())));
    }
    check_payload_start(kind, p)?;
    let u64_at = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap());
    let sample_rate = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let channels = p[4];
    let data = &p[AUDIO_HEADER_LEN..];
    if data.len() % (2 * channels as usize) != 0 {
        return Err(bad(format!("{} sample bytes is not a whole number of {channels}-channel s16 samples", data.len())));
    }
    let samples = data.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    Ok(Frame::Audio(AudioFrame {
        sample_rate,
        channels,
        turn: u64_at(8),
        capture_us: u64_at(16),
        sample_index: u64_at(24),
        samples,
    }))
}

/// Check what the first bytes of a payload claim, before the rest has arrived, so a header
/// with a bogus length is caught at once instead of swallowing the frames that follow it.
/// Events: JSON never holds raw control bytes (the next frame's header has them) and starts
/// with `{`. Audio: a plausible rate, channel count and format.
fn check_payload_start(kind: u8, p: &[u8]) -> Result<(), DecodeError> {
    let bad = |reason: String| DecodeError::BadPayload { kind, reason };
    if kind == KIND_EVENT {
        if let Some(i) = p.iter().position(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) {
            return Err(bad(format!("control byte 0x{:02x} at offset {i} of an event payload (JSON has none)", p[i])));
        }
        if let Some(&b) = p.iter().find(|b| !b.is_ascii_whitespace()) {
            if b != b'{' {
                return Err(bad("event payload does not start with a JSON object".into()));
            }
        }
        return Ok(());
    }
    if p.len() < AUDIO_HEADER_LEN {
        return Ok(());
    }
    let sample_rate = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let (channels, format) = (p[4], p[5]);
    if format != FORMAT_S16LE {
        return Err(bad(format!("sample format {format} (only 1 = s16le is defined)")));
    }
    if !SAMPLE_RATES.contains(&sample_rate) || channels == 0 || channels > MAX_CHANNELS {
        return Err(bad(format!(
            "implausible audio: {sample_rate} Hz, {channels} channels (expected {}–{} Hz, 1–{MAX_CHANNELS} channels)",
            SAMPLE_RATES.start(),
            SAMPLE_RATES.end()
        )));
    }
    Ok(())
}

/// Streaming decoder: [`push`](Self::push) bytes, then drain [`next`](Self::next) until `None`.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
    /// Whether any valid frame has been decoded (used to tell "not a frame stream" apart from
    /// "garbage in the middle of one").
    seen_frame: bool,
    /// Bytes skipped in the current run of garbage, and a sample of them for the guess.
    garbage: usize,
    garbage_sample: Vec<u8>,
    /// Bytes still to come of a frame already reported as bad: skipped without a second report.
    quiet: usize,
}

/// A run of garbage is reported when it ends, or every this many bytes (so a live stream of
/// raw PCM is reported at once, not never).
const GARBAGE_REPORT_BYTES: usize = 4096;

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// True once at least one valid frame was decoded.
    pub fn seen_frame(&self) -> bool {
        self.seen_frame
    }

    /// Bytes buffered but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next frame or error, or `None` when more bytes are needed.
    pub fn next(&mut self) -> Option<Result<Frame, DecodeError>> {
        let avail = &self.buf[self.pos..];
        if avail.is_empty() {
            return None;
        }
        // Not at a magic: skip to the next candidate header start, counting the run.
        if !avail.starts_with(&MAGIC[..avail.len().min(4)]) {
            let found = find_magic(avail);
            let skip = found.unwrap_or_else(|| keep_partial_magic(avail));
            let quiet = skip.min(self.quiet);
            self.quiet -= quiet;
            let room = GARBAGE_REPORT_BYTES.saturating_sub(self.garbage_sample.len());
            self.garbage_sample.extend_from_slice(&avail[quiet..skip.max(quiet).min(quiet + room)]);
            self.garbage += skip - quiet;
            self.pos += skip;
            if self.garbage > 0 && (found.is_some() || self.garbage >= GARBAGE_REPORT_BYTES) {
                return Some(Err(self.take_garbage()));
            }
            return if found.is_some() { self.next() } else { None };
        }
        if self.garbage > 0 && avail.len() >= MAGIC.len() {
            return Some(Err(self.take_garbage())); // the run ended at this magic
        }
        if avail.len() < HEADER_LEN {
            return None;
        }
        match parse_header(&avail[..HEADER_LEN]) {
            Err(e) => {
                self.resync_after_bad_header(0);
                Some(Err(e))
            }
            Ok((kind, len)) => {
                if avail.len() < HEADER_LEN + len {
                    if let Err(e) = check_payload_start(kind, &avail[HEADER_LEN..]) {
                        self.resync_after_bad_header(HEADER_LEN + len);
                        return Some(Err(e));
                    }
                    return None;
                }
                let payload = &avail[HEADER_LEN..HEADER_LEN + len];
                let result = parse_payload(kind, payload);
                if result.is_ok() {
                    self.pos += HEADER_LEN + len;
                    self.seen_frame = true;
                    self.quiet = 0;
                } else {
                    // The header may have been a bogus one in front of real frames.
                    self.resync_after_bad_header(HEADER_LEN + len);
                }
                Some(result)
            }
        }
    }

    /// Skip the header at `pos` and resynchronise on the next magic after it, inside the bytes
    /// already buffered: one bad header costs one frame, not the length it claimed. The rest
    /// of the `claimed` bytes (header + payload, already reported) is skipped without a
    /// second report, unless a valid frame turns up inside it.
    fn resync_after_bad_header(&mut self, claimed: usize) {
        let end = self.pos + claimed;
        self.pos += 1;
        let rest = &self.buf[self.pos..];
        let skip = find_magic(rest).unwrap_or_else(|| keep_partial_magic(rest));
        self.pos += skip;
        self.quiet = end.saturating_sub(self.pos);
    }

    fn take_garbage(&mut self) -> DecodeError {
        let looks_like = InputGuess::of(&self.garbage_sample);
        let skipped = std::mem::take(&mut self.garbage);
        self.garbage_sample.clear();
        DecodeError::Garbage { skipped, looks_like }
    }

    /// The input ended (EOF or writer restart): drop any partial frame, reporting it.
    pub fn finish(&mut self) -> Option<DecodeError> {
        self.quiet = 0;
        let have = self.pending();
        if have > 0 && !self.buf[self.pos..].starts_with(&MAGIC[..have.min(4)]) || self.garbage > 0 && have == 0 {
            let rest = self.buf[self.pos..].to_vec();
            let room = GARBAGE_REPORT_BYTES.saturating_sub(self.garbage_sample.len());
            self.garbage_sample.extend_from_slice(&rest[..rest.len().min(room)]);
            self.garbage += rest.len();
            self.buf.clear();
            self.pos = 0;
            return Some(self.take_garbage());
        }
        let err = if have == 0 {
            None
        } else if self.buf[self.pos..].starts_with(&MAGIC[..have.min(4)]) {
            let need = if have >= HEADER_LEN {
                parse_header(&self.buf[self.pos..self.pos + HEADER_LEN])
                    .map(|(_, l)| HEADER_LEN + l)
                    .unwrap_or(HEADER_LEN)
            } else {
                HEADER_LEN
            };
            Some(DecodeError::Truncated { have, need })
        } else {
            unreachable!("garbage handled above")
        };
        self.buf.clear();
        self.pos = 0;
        err
    }
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == MAGIC)
}

/// When no full magic is found, keep a trailing prefix of it (it may complete on the next read).
fn keep_partial_magic(bytes: &[u8]) -> usize {
    for keep in (1..4.min(bytes.len() + 1)).rev() {
        if bytes.len() >= keep && bytes[bytes.len() - keep..] == MAGIC[..keep] {
            return bytes.len() - keep;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(n: usize) -> Frame {
        Frame::Audio(AudioFrame {
            sample_rate: 48000,
            channels: 1,
            turn: 7,
            capture_us: 123,
            sample_index: 960,
            samples: (0..n as i16).collect(),
        })
    }

    fn decode_all(bytes: &[u8], chunk: usize) -> Vec<Result<Frame, DecodeError>> {
        let mut d = FrameDecoder::new();
        let mut out = vec![];
        for c in bytes.chunks(chunk.max(1)) {
            d.push(c);
            while let Some(r) = d.next() {
                out.push(r);
            }
        }
        if let Some(e) = d.finish() {
            out.push(Err(e));
        }
        out
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let ev = Frame::Event(Event::new("transcript").with_turn(3).with_text("hi, 3.14"));
        let mut bytes = encode(&audio(960));
        bytes.extend(encode(&ev));
        let got = decode_all(&bytes, 1);
        assert_eq!(got, vec![Ok(audio(960)), Ok(ev)]);
    }

    #[test]
    fn header_layout_is_as_documented() {
        let b = encode(&audio(2));
        assert_eq!(&b[0..4], b"TGVF");
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 1);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 36);
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 48000);
        assert_eq!(u64::from_le_bytes(b[20..28].try_into().unwrap()), 7);
    }

    #[test]
    fn oversize_length_is_rejected_without_allocation_and_resyncs() {
        let mut bytes = b"TGVF\x01\x01\x00\x00".to_vec();
        bytes.extend_from_slice(&(2u32 << 30).to_le_bytes());
        bytes.extend(encode(&audio(4)));
        let got = decode_all(&bytes, 7);
        assert!(matches!(got[0], Err(DecodeError::Oversize { length }) if length == 2 << 30));
        assert_eq!(got.last().unwrap(), &Ok(audio(4)));
    }

    #[test]
    fn garbage_between_frames_is_skipped() {
        let mut bytes = encode(&audio(4));
        bytes.extend_from_slice(b"hello world, this is not a frame\n");
        bytes.extend(encode(&audio(5)));
        let got = decode_all(&bytes, 3);
        assert_eq!(got.len(), 3);
        assert!(matches!(got[1], Err(DecodeError::Garbage { skipped: 33, looks_like: InputGuess::Text })), "{got:?}");
        assert_eq!(got[2], Ok(audio(5)));
    }

    #[test]
    fn truncated_frame_is_reported_on_finish() {
        let bytes = encode(&audio(100));
        let got = decode_all(&bytes[..50], 10);
        assert!(matches!(got[..], [Err(DecodeError::Truncated { have: 50, need: 244 })]));
    }

    #[test]
    fn bad_json_and_bad_utf8_are_payload_errors() {
        for payload in [&b"{not json"[..], &b"\xff\xfe"[..], &b"[1,2]"[..], &b"{\"no_type\":1}"[..]] {
            let mut bytes = b"TGVF\x01\x02\x00\x00".to_vec();
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(payload);
            bytes.extend(encode(&audio(1)));
            let got = decode_all(&bytes, 5);
            assert!(matches!(got[0], Err(DecodeError::BadPayload { kind: 2, .. })), "{payload:?}: {got:?}");
            assert_eq!(got[1], Ok(audio(1)));
        }
    }

    /// Case 7 of issue 18: a valid header claiming 1 MiB in front of real frames.
    #[test]
    fn bogus_length_header_costs_one_frame_not_the_next_megabyte() {
        let next = Frame::Event(Event::new("transcript").with_turn(2).with_text("still here"));
        for kind in [KIND_EVENT, KIND_AUDIO] {
            let mut bytes = b"TGVF\x01".to_vec();
            bytes.push(kind);
            bytes.extend_from_slice(&[0, 0]);
            bytes.extend_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
            bytes.extend(encode(&next));
            bytes.extend(encode(&audio(3)));
            // No finish(): on a live link the megabyte never comes.
            let mut d = FrameDecoder::new();
            d.push(&bytes);
            let got: Vec<_> = std::iter::from_fn(|| d.next()).collect();
            assert!(matches!(got[0], Err(DecodeError::BadPayload { .. })), "kind {kind}: {got:?}");
            assert_eq!(got[1..], [Ok(next.clone()), Ok(audio(3))], "kind {kind}");
        }
    }

    /// A complete frame whose payload is invalid: resync inside it, not after it.
    #[test]
    fn invalid_payload_resyncs_inside_the_bytes_it_covered() {
        let inner = encode(&audio(2));
        let mut bytes = b"TGVF\x01\x01\x00\x00".to_vec();
        bytes.extend_from_slice(&(inner.len() as u32 + 40).to_le_bytes());
        bytes.extend_from_slice(&[0u8; 40]); // audio header with rate 0
        bytes.extend_from_slice(&inner);
        let got = decode_all(&bytes, 1 << 20);
        assert!(matches!(got[0], Err(DecodeError::BadPayload { kind: 1, .. })), "{got:?}");
        assert_eq!(got.last().unwrap(), &Ok(audio(2)));
    }

    /// Case 3 of issue 18: 600 bytes declaring 1 Hz would be minutes of audio downstream.
    #[test]
    fn implausible_sample_rates_and_channels_are_rejected() {
        for (rate, channels) in [(1, 1), (7_999, 1), (192_001, 1), (48_000, 0), (48_000, 9)] {
            let mut f = audio(300);
            if let Frame::Audio(a) = &mut f {
                a.sample_rate = rate;
                a.channels = channels;
            }
            let got = decode_all(&encode(&f), 64);
            assert!(matches!(got[..], [Err(DecodeError::BadPayload { kind: 1, .. })]), "{rate} Hz {channels} ch: {got:?}");
        }
        assert_eq!(decode_all(&encode(&audio(300)), 64), vec![Ok(audio(300))]);
    }

    /// Case 1 of issue 18: `9e9` re-encodes as `9000000000.0`, so a valid event can grow over
    /// the cap on its way through a stage.
    #[test]
    fn event_that_grows_over_the_cap_is_refused_not_panicked() {
        let json = format!("{{\"type\":\"x\",\"v\":[{}9e9]}}", "9e9,".repeat(110_000));
        assert!(json.len() < MAX_PAYLOAD);
        let event: Event = serde_json::from_str(&json).unwrap();
        let mut out = b"kept".to_vec();
        let err = encode_into(&Frame::Event(event), &mut out).unwrap_err();
        assert!(err.payload > MAX_PAYLOAD, "{err}");
        assert_eq!(out, b"kept");
    }

    #[test]
    fn guesses_what_non_frames_are() {
        let mut wav = b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec();
        wav.extend_from_slice(&[0; 32]);
        assert_eq!(InputGuess::of(&wav), InputGuess::Wav);
        assert_eq!(InputGuess::of(b"hello there\n"), InputGuess::Text);
        let sine: Vec<u8> = (0..2000)
            .flat_map(|i| (((i as f64 * 0.05).sin() * 8000.0) as i16).to_le_bytes())
            .collect();
        assert_eq!(InputGuess::of(&sine), InputGuess::RawPcm);
        let mut x: u32 = 12345;
        let random: Vec<u8> = (0..4000)
            .map(|_| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(InputGuess::of(&random), InputGuess::Binary);
    }
}
