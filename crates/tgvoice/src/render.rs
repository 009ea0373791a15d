//! How a program's frames are written for whoever reads them (fifo-layout.md §1 "Output
//! formats"): the frame stream itself for the next stage, one JSON line per frame for `jq`, or
//! lines a person reads. `--format` chooses; without it the output decides, as `ls` and `git`
//! do: a terminal gets text, a pipe, FIFO or file gets frames (byte-for-byte the stream a stage
//! always wrote).

use crate::event::{kind, trace_key, Event};
use crate::frame::{encode_into, AudioFrame, Frame, TooLarge};
use std::io::Write;

/// What a program writes its frames as (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The binary frame stream (fifo-layout.md §2): what the next stage reads.
    Frames,
    /// One JSON object per frame per line: an event as its JSON, audio as a summary object.
    Jsonl,
    /// Lines for a person: what the program's output means (its --help says what that is).
    Text,
}

impl Format {
    /// The format asked for, else text to a terminal and frames to anything else.
    pub fn resolve(chosen: Option<Format>, to_terminal: bool) -> Format {
        chosen.unwrap_or(if to_terminal { Format::Text } else { Format::Frames })
    }

    /// The name `--format` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Frames => "frames",
            Format::Jsonl => "jsonl",
            Format::Text => "text",
        }
    }
}

/// What the text format shows of a program's output: what a person reading it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextView {
    /// One line per event with the time it was written; audio summarised, a line per second
    /// of it (and per turn), never dumped (tgcat, vadseg, tts-writer's frames).
    Events,
    /// The final transcripts alone, one line each; previews and other events hidden (sttd).
    Transcripts,
    /// The reply text as it streams, one line per reply (llm-relay).
    Reply,
}

impl TextView {
    /// What a person sees on a terminal, for `--help`.
    pub fn describe(&self) -> &'static str {
        match self {
            TextView::Events => "one line per event with the time it was written (UTC), audio summarised in a line per second",
            TextView::Transcripts => "each final transcript as one line of plain text, nothing else (previews hidden)",
            TextView::Reply => "the reply text as it streams, one line per reply",
        }
    }
}

/// The "Output" paragraph of a program's `--help` (fifo-layout.md §1 "Output formats").
pub fn output_help(view: TextView) -> String {
    format!(
        "Output (--format):\n  to a pipe, FIFO or file: frames\n  to a terminal, or --format text: {}\n  --format jsonl: one JSON object per frame per line (audio as a summary, no samples)",
        view.describe()
    )
}

/// Raw audio is never written to a terminal (it would fill it with noise): the one-line refusal
/// (exit 2) that names what to run instead, for the command line `pipeline` writing s16le mono
/// at `rate` Hz.
pub fn raw_audio_refused(pipeline: &str, rate: u32) -> anyhow::Error {
    crate::cli::fail(
        crate::cli::exit::USAGE,
        format!(
            "not writing raw audio to a terminal; play it with `{pipeline} | ffplay -nodisp -autoexit -f s16le -ar {rate} -ac 1 -` \
             or sox's `{pipeline} | play -t raw -r {rate} -e signed -b 16 -c 1 -`, or save it with `> audio.raw`"
        ),
    )
}

/// An audio frame as one JSON object, without its samples (jsonl, framecat).
pub fn audio_summary(a: &AudioFrame) -> serde_json::Value {
    let rms = crate::audio::rms_i16(&a.samples);
    serde_json::json!({
        "type": "audio",
        "rate": a.sample_rate,
        "channels": a.channels,
        "samples": a.samples.len() / a.channels.max(1) as usize,
        "ms": a.duration_us() as f64 / 1000.0,
        "turn": a.turn,
        "capture_us": a.capture_us,
        "index": a.sample_index,
        "rms": (rms * 10.0).round() / 10.0,
    })
}

/// A frame as one JSON line (no newline): the event's own JSON, or [`audio_summary`].
pub fn json_line(frame: &Frame) -> String {
    match frame {
        Frame::Audio(a) => audio_summary(a).to_string(),
        Frame::Event(e) => e.to_json_line(),
    }
}

/// The longest audio run summarised in one text line.
const AUDIO_LINE_US: u64 = 1_000_000;

/// Audio waiting to be summarised in one text line: consecutive frames of one turn and format.
struct AudioRun {
    rate: u32,
    channels: u8,
    turn: u64,
    duration_us: u64,
    samples: u64,
    sum_squares: f64,
}

impl AudioRun {
    fn of(a: &AudioFrame) -> Self {
        AudioRun { rate: a.sample_rate, channels: a.channels, turn: a.turn, duration_us: 0, samples: 0, sum_squares: 0.0 }
    }

    fn continues(&self, a: &AudioFrame) -> bool {
        (self.rate, self.channels, self.turn) == (a.sample_rate, a.channels, a.turn) && self.duration_us < AUDIO_LINE_US
    }

    fn add(&mut self, a: &AudioFrame) {
        self.duration_us += a.duration_us();
        self.samples += a.samples.len() as u64;
        self.sum_squares += a.samples.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>();
    }

    fn line(&self) -> String {
        let rms = if self.samples == 0 { 0.0 } else { (self.sum_squares / self.samples as f64).sqrt() };
        let ch = if self.channels == 1 { String::new() } else { format!(" {} channels", self.channels) };
        let turn = if self.turn == 0 { String::new() } else { format!("  turn {}", self.turn) };
        format!("audio  {:.2} s at {} Hz{ch}{turn}  rms {rms:.0}", self.duration_us as f64 / 1e6, self.rate)
    }
}

/// Turns frames into the bytes of one [`Format`]. Frames are encoded exactly as
/// [`crate::frame::encode_into`] does; text may hold audio (to summarise it) or an unfinished
/// reply line until [`Renderer::finish`].
pub struct Renderer {
    format: Format,
    view: TextView,
    audio: Option<AudioRun>,
    /// Reply view: text of a reply has been written and its line is still open.
    reply_open: bool,
}

impl Renderer {
    pub fn new(format: Format, view: TextView) -> Self {
        Renderer { format, view, audio: None, reply_open: false }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Append what `frame` becomes to `out` (perhaps nothing yet, or nothing at all). Only the
    /// frames format can refuse a frame: one whose payload would be over the cap.
    pub fn render(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), TooLarge> {
        match self.format {
            Format::Frames => return encode_into(frame, out),
            Format::Jsonl => {
                out.extend_from_slice(json_line(frame).as_bytes());
                out.push(b'\n');
            }
            Format::Text => match (self.view, frame) {
                (TextView::Events, Frame::Audio(a)) => {
                    if !self.audio.as_ref().is_some_and(|r| r.continues(a)) {
                        self.flush_audio(out);
                        self.audio = Some(AudioRun::of(a));
                    }
                    self.audio.as_mut().expect("set above").add(a);
                }
                (TextView::Events, Frame::Event(e)) => {
                    self.flush_audio(out);
                    timed_line(out, &event_line(e));
                }
                (TextView::Transcripts, Frame::Event(e)) => {
                    let text = e.text.as_deref().unwrap_or("").trim();
                    if e.is(kind::TRANSCRIPT) && e.get_bool("final") != Some(false) && !text.is_empty() {
                        let _ = writeln!(out, "{text}");
                    }
                }
                (TextView::Reply, Frame::Event(e)) => self.reply_text(e, out),
                (TextView::Transcripts | TextView::Reply, Frame::Audio(_)) => {}
            },
        }
        Ok(())
    }

    /// Append what is still held: the last audio summary, the end of an unfinished reply line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush_audio(out);
        if std::mem::take(&mut self.reply_open) {
            out.push(b'\n');
        }
    }

    fn flush_audio(&mut self, out: &mut Vec<u8>) {
        if let Some(run) = self.audio.take() {
            timed_line(out, &run.line());
        }
    }

    /// The reply view: chunks joined on one line as they come, the line ended by the reply's end.
    fn reply_text(&mut self, e: &Event, out: &mut Vec<u8>) {
        match e.kind.as_str() {
            kind::REPLY_CHUNK => {
                let text = e.text.as_deref().unwrap_or("");
                if self.reply_open && !text.starts_with(char::is_whitespace) {
                    out.push(b' ');
                }
                out.extend_from_slice(text.as_bytes());
                self.reply_open |= !text.is_empty();
            }
            kind::REPLY_END => {
                if e.get_bool("cancelled") == Some(true) {
                    out.extend_from_slice(if self.reply_open { " [interrupted]".as_bytes() } else { b"[interrupted]" });
                    self.reply_open = true;
                }
                self.finish(out);
            }
            kind::ERROR => {
                self.finish(out);
                let _ = writeln!(out, "[error: {}]", e.text.as_deref().or(e.get_str("message")).unwrap_or("see the log"));
            }
            _ => {}
        }
    }
}

/// `HH:MM:SS.mmm  line` (UTC, as the logs), when it is written.
fn timed_line(out: &mut Vec<u8>, line: &str) {
    let now = time::OffsetDateTime::now_utc();
    let _ = writeln!(out, "{:02}:{:02}:{:02}.{:03}  {line}", now.hour(), now.minute(), now.second(), now.millisecond());
}

/// `speech-end  turn 7  "text"  1.84 s of speech  final=true`: the type, the turn, the text, the
/// length of the speech when the trace has it, then the other fields (the trace is left out).
fn event_line(e: &Event) -> String {
    let mut line = e.kind.clone();
    if let Some(turn) = e.turn {
        line.push_str(&format!("  turn {turn}"));
    }
    if let Some(text) = &e.text {
        line.push_str(&format!("  {}", serde_json::Value::from(text.as_str())));
    }
    if let Some(ms) = e.trace.span_ms(trace_key::SPEECH_START, trace_key::SPEECH_END) {
        line.push_str(&format!("  {:.2} s of speech", ms / 1000.0));
    }
    for (k, v) in &e.extra {
        match v {
            serde_json::Value::String(s) => line.push_str(&format!("  {k}={s:?}")),
            v => line.push_str(&format!("  {k}={v}")),
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_all(format: Format, view: TextView, frames: &[Frame]) -> String {
        let mut r = Renderer::new(format, view);
        let mut out = vec![];
        for f in frames {
            r.render(f, &mut out).unwrap();
        }
        r.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn audio(turn: u64, ms: usize) -> Frame {
        let mut a = AudioFrame::mono(16_000, vec![100; 16 * ms]);
        a.turn = turn;
        Frame::Audio(a)
    }

    fn transcript(text: &str, final_: bool) -> Frame {
        let mut e = Event::new(kind::TRANSCRIPT).with_turn(7).with_text(text).with("final", final_);
        if !final_ {
            e = e.with("preview", true);
        }
        Frame::Event(e)
    }

    #[test]
    fn frames_are_the_codec_bytes() {
        let frames = [audio(0, 20), transcript("hi", true)];
        let mut r = Renderer::new(Format::Frames, TextView::Events);
        let (mut got, mut want) = (vec![], vec![]);
        for f in &frames {
            r.render(f, &mut got).unwrap();
            want.extend(crate::frame::encode(f));
        }
        r.finish(&mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn jsonl_is_one_object_per_frame() {
        let out = render_all(Format::Jsonl, TextView::Transcripts, &[audio(3, 20), transcript("hi", true)]);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0]["type"].as_str(), lines[0]["samples"].as_u64(), lines[0]["turn"].as_u64()), (Some("audio"), Some(320), Some(3)));
        assert_eq!(lines[1]["text"], "hi");
    }

    #[test]
    fn transcripts_view_is_the_final_transcripts_alone() {
        let frames = [
            Frame::Event(Event::new(kind::SPEECH_START).with_turn(7)),
            audio(7, 20),
            transcript("What is", false),
            transcript("What is the capital of France?", true),
            transcript("", true),
            Frame::Event(Event::new(kind::SPEECH_END).with_turn(7)),
        ];
        assert_eq!(render_all(Format::Text, TextView::Transcripts, &frames), "What is the capital of France?\n");
    }

    #[test]
    fn reply_view_streams_the_text_one_line_per_reply() {
        let chunk = |t: &str| Frame::Event(Event::new(kind::REPLY_CHUNK).with_turn(1).with_text(t));
        let end = |cancelled: bool| Frame::Event(Event::new(kind::REPLY_END).with_turn(1).with("cancelled", cancelled));
        let frames = [chunk("The capital"), chunk("is Paris."), end(false), chunk("Well,"), end(true), chunk("Yes.")];
        assert_eq!(render_all(Format::Text, TextView::Reply, &frames), "The capital is Paris.\nWell, [interrupted]\nYes.\n");
    }

    #[test]
    fn events_view_summarises_audio_a_line_a_second_and_shows_events() {
        let mut frames: Vec<Frame> = (0..60).map(|_| audio(0, 20)).collect(); // 1.2 s
        let mut start = Event::new(kind::SPEECH_END).with_turn(9).with("decided_us", 5);
        start.trace.mark(trace_key::SPEECH_START, 1_000_000);
        start.trace.mark(trace_key::SPEECH_END, 2_840_000);
        frames.push(Frame::Event(start));
        let out = render_all(Format::Text, TextView::Events, &frames);
        let lines: Vec<&str> = out.lines().map(|l| l.split_once("  ").unwrap().1).collect();
        assert_eq!(lines, ["audio  1.00 s at 16000 Hz  rms 100", "audio  0.20 s at 16000 Hz  rms 100", "speech-end  turn 9  1.84 s of speech  decided_us=5"]);
        assert!(out.is_ascii() && !out.contains("TGVF"));
    }
}
