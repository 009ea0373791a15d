//! The pipeline side of one call, on its own thread with a 10 ms clock (the FIFO rules of
//! fifo-layout.md §3, exactly as tg-bridge follows them): the caller's μ-law audio becomes s16le
//! 48 kHz written to `tg_input.raw` without blocking; whatever `tg_output.raw` holds is read
//! without blocking, resampled to 8 kHz μ-law and handed to the WebSocket in 20 ms payloads;
//! `call-start`/`call-end` go to `control.frames`; the instance's `text.tap` and `reply.tap`
//! tell it when the caller may have barged in (speech-onset, when tts-writer pauses the reply)
//! or did (speech-start, cancel, a cancelled reply-end), so Twilio's buffer can be cleared at once;
//! tts-writer's `line.frames` carries call control (`hangup`, `transfer`), passed on to the
//! WebSocket side only after the audio before it has been.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};
use tgvoice::event::kind;
use tgvoice::fifo::{Endpoint, FifoWriter, WriteOutcome};
use tgvoice::frame::encode;
use tgvoice::mulaw;
use tgvoice::raw_link::{LineEvents, RawInputWriter, RawOutputReader, TapLines};
use tgvoice::resample::StreamResampler;
use tgvoice::{Event, Frame};
use tokio::sync::mpsc::UnboundedSender;

const TICK: Duration = Duration::from_millis(10);
/// Twilio's media frame: 20 ms of 8 kHz μ-law.
pub const TWILIO_FRAME: usize = 160;
/// Output quiet this long ends a burst of assistant audio (tts-writer writes every 10 ms while
/// it speaks, at most 60 ms ahead).
const BURST_GAP: Duration = Duration::from_millis(80);
/// After a barge-in, output is discarded until it pauses this long (the cancelled reply's tail
/// that was already in the FIFO or written before tts-writer heard the cancel), at most
/// MUTE_MAX.
const MUTE_GAP: Duration = Duration::from_millis(40);
const MUTE_MAX: Duration = Duration::from_millis(1500);
/// After a `speech-onset`, at most this long: tts-writer pauses within a tick or two of it, so
/// output that goes on is a tts-writer that does not pause at onsets (`--pause-timeout 0`),
/// whose reply must not lose more than this to a cough.
const ONSET_MUTE_MAX: Duration = Duration::from_millis(250);
/// After reply-end, a reply counts as over once the output has been quiet this long.
const REPLY_TAIL: Duration = Duration::from_millis(1000);
/// Control events held while tgcat is not reading control.frames (tg-bridge holds 32).
const CONTROL_QUEUE: usize = 32;

/// From the WebSocket to the pipeline.
pub enum ToPipeline {
    /// 8 kHz μ-law from the caller.
    Audio(Vec<u8>),
    /// call-start / call-end.
    Event(Event),
}

/// From the pipeline to the WebSocket.
#[derive(Debug)]
pub enum ToTwilio {
    /// 20 ms of 8 kHz μ-law for the caller.
    Audio(Vec<u8>),
    /// A burst of assistant audio ended here (Twilio echoes the mark when it has played it).
    EndOfBurst,
    /// The caller may have started talking (speech-onset: the reply is paused), did
    /// (speech-start), or the reply was cancelled: flush Twilio's buffer now.
    /// `replying`: a reply was in progress (its chunks seen on reply.tap, no reply-end yet).
    /// `onset_ms`: how long ago the caller's speech began (speech-start's trace), if known.
    BargeIn { why: &'static str, replying: bool, onset_ms: Option<f64> },
    /// Call control from line.frames (`hangup`, `transfer`), sent after every audio frame and
    /// the end-of-burst mark of what tts-writer wrote before it.
    Control(Event),
    /// What the pipeline heard or said (for the log).
    Heard(String),
    Said(String),
}

pub struct CallLinks {
    input: RawInputWriter,
    output: RawOutputReader,
    text_tap: TapLines,
    reply_tap: TapLines,
    control: FifoWriter,
    /// tts-writer's call control (None: an instance without line.frames).
    line: Option<LineEvents>,
}

impl CallLinks {
    /// Open an instance's links. Done when the instance becomes warm, so the writers of
    /// tg_output.raw and the taps are attached before the call starts.
    pub fn open(run_dir: &Path) -> anyhow::Result<CallLinks> {
        Ok(CallLinks {
            input: RawInputWriter::new(run_dir.join("tg_input.raw")),
            output: RawOutputReader::open(run_dir.join("tg_output.raw"))?,
            text_tap: TapLines::open(&run_dir.join("text.tap")),
            reply_tap: TapLines::open(&run_dir.join("reply.tap")),
            control: FifoWriter::open(Endpoint::Path(run_dir.join("control.frames")))?,
            line: LineEvents::open(run_dir)?,
        })
    }

    /// Discard whatever arrived before the call (nothing normally).
    pub fn drain(&mut self) {
        let mut junk = vec![];
        self.output.read_available(&mut junk);
        self.text_tap.poll();
        self.reply_tap.poll();
        if let Some(line) = self.line.as_mut() {
            line.poll();
        }
    }

    /// The instance has line.frames: the assistant can end the call.
    pub fn has_line(&self) -> bool {
        self.line.is_some()
    }
}

/// Counters for the call's summary line.
#[derive(Debug, Default, Clone)]
pub struct MediaStats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub input_dropped: u64,
    pub barge_ins: u64,
}

/// tg_output.raw's 48 kHz to the line's 8 kHz, in 20 ms blocks.
fn to_line_rate() -> StreamResampler {
    StreamResampler::new(tgvoice::audio::RATE, 8_000, 960).expect("48 → 8 kHz")
}

/// Run the pipeline side until `from_ws` closes; the last events are delivered (≤ 300 ms).
pub fn run(mut links: CallLinks, from_ws: Receiver<ToPipeline>, to_ws: UnboundedSender<ToTwilio>) -> MediaStats {
    let mut up = StreamResampler::new(8_000, tgvoice::audio::RATE, TWILIO_FRAME).expect("8 → 48 kHz");
    let mut down = to_line_rate();
    let mut control: VecDeque<Vec<u8>> = VecDeque::new();
    let mut stats = MediaStats::default();
    let mut out_bytes: Vec<u8> = vec![];
    let mut ulaw: Vec<u8> = vec![];
    let mut last_output: Option<Instant> = None;
    let mut in_burst = false;
    // Output is dropped from this instant until it pauses (MUTE_GAP), for at most the limit.
    let mut muted_since: Option<(Instant, Duration)> = None;
    // A reply is in progress from its first chunk until llm-relay's reply-end *and* the
    // output has gone quiet (tts-writer may still be speaking the queued sentences).
    let mut replying = false;
    let mut reply_end_at: Option<Instant> = None;
    // The caller's turn whose speech-onset cleared Twilio's buffer, while nothing has been
    // sent to Twilio since (the reply is paused): its speech-start needs no second clear.
    let mut paused_for: Option<u64> = None;
    // The last turn whose speech-onset / speech-start was acted on: both taps carry them
    // (llm-relay forwards what sttd sends), and one clear is enough.
    let (mut onset_seen, mut start_seen): (Option<u64>, Option<u64>) = (None, None);
    // Call control read from line.frames, held until the audio before it has gone out.
    let mut control_out: Vec<Event> = vec![];
    let start = Instant::now();
    let mut tick = 0u32;
    let mut closing: Option<Instant> = None;
    loop {
        let due = start + TICK * tick;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        tick += 1;
        let now = Instant::now();

        // The caller → tg_input.raw (never blocks; a full pipe or no reader drops and counts).
        loop {
            match from_ws.try_recv() {
                Ok(ToPipeline::Audio(bytes)) => {
                    stats.frames_in += 1;
                    let pcm = up.process(&mulaw::decode_all(&bytes));
                    let before = links.input.dropped_chunks;
                    links.input.write(&pcm.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>());
                    stats.input_dropped += links.input.dropped_chunks - before;
                }
                Ok(ToPipeline::Event(e)) => {
                    if control.len() >= CONTROL_QUEUE {
                        control.pop_front();
                        log::warn!("control.frames: nobody has read it for a while; dropped the oldest event");
                    }
                    control.push_back(encode(&Frame::Event(e)));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closing.get_or_insert(now);
                    break;
                }
            }
        }
        while let Some(bytes) = control.front() {
            match links.control.write_chunk(bytes) {
                WriteOutcome::Delivered => {
                    control.pop_front();
                }
                _ => break, // no reader yet: held, retried next tick
            }
        }
        if let Some(t) = closing {
            if control.is_empty() || t.elapsed() > Duration::from_millis(300) {
                if !control.is_empty() {
                    log::warn!("control.frames: {} event(s) not delivered (tgcat not reading)", control.len());
                }
                return stats;
            }
            continue;
        }

        // Barge-in and what was said, from the taps.
        for v in links.text_tap.poll().into_iter().chain(links.reply_tap.poll()) {
            let turn = v["turn"].as_u64();
            let why = match v["type"].as_str() {
                // The caller may be talking: tts-writer pauses the reply now, so Twilio's
                // buffer goes too. A false alarm costs nothing: tts-writer replays from a
                // little before its pause point (`--resume-replay`), more than Twilio held.
                Some(kind::SPEECH_ONSET) if turn.is_some() && turn == onset_seen => None,
                Some(kind::SPEECH_ONSET) => {
                    onset_seen = turn;
                    paused_for = turn;
                    Some("speech-onset")
                }
                Some(kind::SPEECH_START) if turn.is_some() && turn == start_seen => None,
                // Cleared at that turn's onset already, and nothing was sent since.
                Some(kind::SPEECH_START) if turn.is_some() && turn == paused_for => {
                    start_seen = turn;
                    None
                }
                Some(kind::SPEECH_START) => {
                    start_seen = turn;
                    Some("speech-start")
                }
                Some(kind::CANCEL) => Some("cancel"),
                Some(kind::REPLY_END) => {
                    reply_end_at = Some(now);
                    (v["cancelled"] == true && replying).then_some("reply cancelled")
                }
                Some(kind::TRANSCRIPT) if v["final"] != false => {
                    let _ = to_ws.send(ToTwilio::Heard(v["text"].as_str().unwrap_or("").to_string()));
                    None
                }
                Some(kind::REPLY_CHUNK) => {
                    replying = true;
                    reply_end_at = None;
                    let _ = to_ws.send(ToTwilio::Said(v["text"].as_str().unwrap_or("").to_string()));
                    None
                }
                _ => None,
            };
            if let Some(why) = why {
                stats.barge_ins += 1;
                let onset_ms = v["trace"]["speech_start"]
                    .as_u64()
                    .map(|t| (tgvoice::clock::now_us().saturating_sub(t)) as f64 / 1e3);
                let _ = to_ws.send(ToTwilio::BargeIn { why, replying, onset_ms });
                // A pause is not the end of the reply: it may resume.
                if why != "speech-onset" {
                    replying = false;
                }
                muted_since = Some((now, if why == "speech-onset" { ONSET_MUTE_MAX } else { MUTE_MAX }));
                ulaw.clear();
                // What the resampler still holds is from before the pause (replayed on a
                // resume) or of a cancelled reply: neither follows what Twilio plays next.
                down = to_line_rate();
                in_burst = false;
            }
        }

        if replying && reply_end_at.is_some_and(|t| now - t > REPLY_TAIL) && last_output.map_or(true, |t| now - t > REPLY_TAIL) {
            replying = false;
        }

        // line.frames before tg_output.raw: tts-writer writes an event after the last sample
        // of the audio before it, so that audio is in the pipe when the event is seen.
        if let Some(line) = links.line.as_mut() {
            control_out.extend(line.poll());
        }
        // tg_output.raw → the caller, in 20 ms μ-law frames.
        links.output.read_available(&mut out_bytes);
        let whole = out_bytes.len() / 2 * 2;
        if whole > 0 {
            last_output = Some(now);
        }
        let pcm: Vec<i16> = out_bytes.drain(..whole).collect::<Vec<u8>>().chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
        if let Some((since, max)) = muted_since {
            let paused = last_output.map_or(true, |t| now - t >= MUTE_GAP);
            if (paused && now - since >= MUTE_GAP) || now - since > max {
                muted_since = None;
            } else {
                continue; // the paused or cancelled reply's tail: dropped
            }
        }
        if !pcm.is_empty() {
            // Audio after the pause (a resumed reply's replay, the next reply): a later
            // speech-start is a barge-in of its own again.
            paused_for = None;
            ulaw.extend(mulaw::encode_all(&down.process(&pcm)));
            in_burst = true;
        } else if in_burst && last_output.is_some_and(|t| now - t >= BURST_GAP) {
            // The burst is over: push the resampler's last block out and pad the last frame.
            ulaw.extend(mulaw::encode_all(&down.process(&[0; 960])));
            let pad = (TWILIO_FRAME - ulaw.len() % TWILIO_FRAME) % TWILIO_FRAME;
            ulaw.extend(std::iter::repeat(mulaw::encode(0)).take(pad));
            for frame in ulaw.chunks(TWILIO_FRAME) {
                let _ = to_ws.send(ToTwilio::Audio(frame.to_vec()));
                stats.frames_out += 1;
            }
            ulaw.clear();
            in_burst = false;
            let _ = to_ws.send(ToTwilio::EndOfBurst);
        }
        while ulaw.len() >= TWILIO_FRAME {
            let frame: Vec<u8> = ulaw.drain(..TWILIO_FRAME).collect();
            let _ = to_ws.send(ToTwilio::Audio(frame));
            stats.frames_out += 1;
        }
        // The burst before the event has been sent, with its mark: the event follows it.
        if !in_burst && !control_out.is_empty() {
            for e in control_out.drain(..) {
                let _ = to_ws.send(ToTwilio::Control(e));
            }
        }
    }
}
