//! The simulated call: a 10 ms clock that feeds the caller's script into tg_input.raw, records
//! tg_output.raw, follows the transcript/reply taps, and measures each turn.

use tgvoice::raw_link::{RawInputWriter, RawOutputReader, TapLines};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tgvoice::fifo::{Endpoint, FifoWriter};
use tgvoice::frame::encode;
use tgvoice::{Event, Frame};

const RATE: usize = tgvoice::audio::RATE as usize;
const TICK: usize = 480; // 10 ms, what the bridge sends per tick
/// A 10 ms chunk with RMS above this counts as voice (caller or assistant).
const VOICE_RMS: f64 = 300.0;
/// Output silence that marks "the assistant stopped talking" after a barge-in.
const STOP_SILENCE_TICKS: usize = 25;

pub struct TurnPlan {
    pub wav: PathBuf,
    pub samples: Vec<i16>,
    /// Start this many ms after the previous reply began (barge-in), instead of after it ended.
    pub barge_after_ms: Option<u64>,
}

pub struct CallScript(pub Vec<TurnPlan>);

impl CallScript {
    pub fn parse(turns: &[String]) -> Result<Self> {
        let mut plans = vec![];
        for t in turns {
            let (barge, path) = match t.strip_prefix("barge:") {
                Some(rest) => {
                    let (ms, path) = rest.split_once(':').context("barge turns look like barge:MS:FILE")?;
                    (Some(ms.parse::<u64>().context("barge:MS:FILE needs MS in milliseconds")?), path)
                }
                None => (None, t.as_str()),
            };
            let file = File::open(path).with_context(|| format!("cannot open {path}"))?;
            let (rate, mono) = tgvoice::resample::read_wav_mono(std::io::BufReader::new(file))
                .with_context(|| format!("{path} is not a readable WAV"))?;
            let mut rs = tgvoice::resample::StreamResampler::new(rate, RATE as u32, 1024)?;
            let mut samples = rs.process(&mono);
            samples.extend(rs.flush());
            plans.push(TurnPlan { wav: PathBuf::from(path), samples, barge_after_ms: barge });
        }
        if plans.first().is_some_and(|p| p.barge_after_ms.is_some()) {
            bail!("the first turn cannot be a barge-in (there is no reply to talk over yet)");
        }
        Ok(CallScript(plans))
    }
}

use tgvoice::audio::rms_i16 as rms;

#[derive(Default, Clone)]
struct TurnLog {
    onset_tick: Option<usize>,
    end_tick: Option<usize>,
    reply_start_tick: Option<usize>,
    reply_last_voice_tick: Option<usize>,
    heard: Vec<String>,
    answer: Vec<String>,
    pipeline_turn: Option<u64>,
}

pub struct Report {
    pub turns: Vec<Value>,
    pub summary: Value,
}

pub struct Caller {
    run_dir: PathBuf,
    script: CallScript,
    input: RawInputWriter,
    output: RawOutputReader,
    text_tap: TapLines,
    reply_tap: TapLines,
    caller_track: Vec<i16>,
    assistant_track: Vec<i16>,
    /// Per tick: was the assistant audible in that 10 ms?
    assistant_voiced: Vec<bool>,
    reply_silence_ticks: usize,
    reply_timeout_ticks: usize,
    echo: Option<Echo>,
    /// The tick the call ended on the assistant's `hangup`.
    hung_up_at: Option<usize>,
    /// tts-writer's `line.frames` (call control), when the run directory has it.
    line: Option<tgvoice::raw_link::LineEvents>,
}

/// The assistant's voice coming back into the caller's microphone: a gain and a delay line.
struct Echo {
    gain: f32,
    delay: usize,
    line: VecDeque<i16>,
}

impl Echo {
    /// Mix the echo due now into the caller's chunk, then feed this tick's output in.
    fn mix(&mut self, chunk: &mut [i16]) {
        for s in chunk.iter_mut() {
            let e = self.line.pop_front().unwrap_or(0);
            *s = (*s as f32 + e as f32 * self.gain).clamp(i16::MIN as f32, i16::MAX as f32) as i16;
        }
    }

    fn feed(&mut self, output: &[i16]) {
        self.line.extend(output);
        // A tick without output is a tick of silence in the room.
        if output.len() < TICK {
            self.line.extend(std::iter::repeat_n(0, TICK - output.len()));
        }
        // Output arrives in uneven bursts; the silence padding must not grow the delay.
        while self.line.len() > self.delay + 3 * TICK {
            self.line.pop_front();
        }
    }
}

impl Caller {
    pub fn new(run_dir: &Path, script: CallScript, reply_silence: f64, reply_timeout: f64) -> Result<Self> {
        let out_path = run_dir.join("tg_output.raw");
        // A planted symlink or a stranger's file where a link should be exits 78 (fifo-layout.md §1).
        for link in ["tg_input.raw", "tg_output.raw", "line.frames"] {
            let path = run_dir.join(link);
            if path.symlink_metadata().is_ok() {
                tgvoice::fifo::check_link_path(&path)?;
            }
        }
        if !tgvoice::fifo::is_fifo(&out_path) {
            bail!("{} is not a FIFO: is the pipeline running (scripts/voicecall start)?", out_path.display());
        }
        Ok(Caller {
            run_dir: run_dir.to_path_buf(),
            input: RawInputWriter::new(run_dir.join("tg_input.raw")),
            output: RawOutputReader::open(out_path)?,
            text_tap: TapLines::open(&run_dir.join("text.tap")),
            reply_tap: TapLines::open(&run_dir.join("reply.tap")),
            script,
            caller_track: vec![],
            assistant_track: vec![],
            assistant_voiced: vec![],
            reply_silence_ticks: (reply_silence * 100.0) as usize,
            reply_timeout_ticks: (reply_timeout * 100.0) as usize,
            echo: None,
            hung_up_at: None,
            line: tgvoice::raw_link::LineEvents::open(run_dir)?,
        })
    }

    /// Call control that arrived on line.frames: true when the assistant hung up. Anything
    /// else is one log line; the call goes on.
    fn poll_line(&mut self) -> bool {
        let Some(line) = self.line.as_mut() else { return false };
        let mut hangup = false;
        for e in line.poll() {
            if e.is(tgvoice::control::HANGUP) {
                log::info!("the assistant hangs up (turn {}); ending the call once its audio has played", e.turn.unwrap_or(0));
                hangup = true;
            } else if e.is(tgvoice::control::TRANSFER) {
                log::warn!("transfer to {:?} asked for: callsim cannot transfer a call; ignored", e.get_str("to").unwrap_or("?"));
            } else {
                log::debug!("line.frames: ignoring {}", e.kind);
            }
        }
        hangup
    }

    /// Mix the assistant's output back into the input at `gain_db`, `delay_ms` late.
    pub fn with_echo(mut self, gain_db: f64, delay_ms: u64) -> Self {
        let delay = (delay_ms as usize * RATE / 1000).max(TICK);
        self.echo = Some(Echo { gain: 10f64.powf(gain_db / 20.0) as f32, delay, line: VecDeque::from(vec![0; delay]) });
        self
    }

    fn send_event(&self, event: Event) {
        let path = self.run_dir.join("control.frames");
        if !tgvoice::fifo::is_fifo(&path) {
            return;
        }
        if let Ok(mut w) = FifoWriter::open(Endpoint::Path(path)) {
            w.write_chunk(&encode(&Frame::Event(event)));
        }
    }

    pub fn run(&mut self, lead_in: f64, call_events: bool) -> Result<Report> {
        let call_id = format!("callsim-{}", std::process::id());
        if call_events {
            // callsim can end the call on the assistant's `hangup` (fifo-layout.md "Call control").
            let controls = if self.line.is_some() { json!(["end"]) } else { json!([]) };
            self.send_event(Event::new(tgvoice::event::kind::CALL_START).with("call", call_id.clone()).with("controls", controls));
        }
        let n_turns = self.script.0.len();
        let mut logs = vec![TurnLog::default(); n_turns];
        let start = Instant::now();
        let mut tick = 0usize;
        let mut current = 0usize; // turn being said or waited for
        let mut speaking: Option<(usize, usize)> = None; // (turn, sample position)
        let mut next_start_tick = (lead_in * 100.0) as usize;
        let mut silent_run = 0usize;
        let mut out_buf: Vec<u8> = vec![];
        let mut done_tick: Option<usize> = None;
        let mut hangup_tick: Option<usize> = None;
        loop {
            // Real-time clock with drift correction: tick n happens at start + n × 10 ms.
            let due = start + Duration::from_millis(10 * tick as u64);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }

            // Caller: start the next turn when its time has come.
            if speaking.is_none() && current < n_turns && tick >= next_start_tick && logs[current].onset_tick.is_none() {
                speaking = Some((current, 0));
            }
            let mut chunk = vec![0i16; TICK];
            if let Some((t, pos)) = speaking {
                let samples = &self.script.0[t].samples;
                let end = (pos + TICK).min(samples.len());
                chunk[..end - pos].copy_from_slice(&samples[pos..end]);
                if rms(&chunk) > VOICE_RMS {
                    logs[t].onset_tick.get_or_insert(tick);
                    logs[t].end_tick = Some(tick + 1);
                }
                speaking = if end >= samples.len() { None } else { Some((t, end)) };
            }
            // The caller's own voice decides the onset above; the echo only goes into the line.
            if let Some(echo) = self.echo.as_mut() {
                echo.mix(&mut chunk);
            }
            self.input.write(&chunk.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>());
            self.caller_track.extend_from_slice(&chunk);

            // Assistant: whatever tg_output.raw has now.
            self.output.read_available(&mut out_buf);
            let whole = out_buf.len() / 2 * 2;
            let got: Vec<i16> = out_buf.drain(..whole).collect::<Vec<u8>>().chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
            let voiced = got.chunks(TICK).any(|c| rms(c) > VOICE_RMS);
            if let Some(echo) = self.echo.as_mut() {
                echo.feed(&got);
            }
            self.assistant_track.extend_from_slice(&got);
            let timeline_len = (tick + 1) * TICK;
            if self.assistant_track.len() < timeline_len.saturating_sub(10 * TICK) {
                self.assistant_track.resize(timeline_len.saturating_sub(10 * TICK), 0);
            }
            self.assistant_voiced.push(voiced);
            if hangup_tick.is_none() && self.poll_line() {
                hangup_tick = Some(tick);
            }
            // tts-writer wrote the hangup after the goodbye's last sample: once the pipe has
            // nothing more, the goodbye has been heard.
            if hangup_tick.is_some() && got.is_empty() {
                self.hung_up_at = Some(tick);
                break;
            }

            for v in self.text_tap.poll() {
                if v["type"] == "transcript" && v["final"] != false {
                    let text = v["text"].as_str().unwrap_or("").to_string();
                    let slot = (0..n_turns).rev().find(|&i| logs[i].end_tick.is_some()).unwrap_or(0);
                    logs[slot].heard.push(text);
                    logs[slot].pipeline_turn = v["turn"].as_u64();
                }
            }
            for v in self.reply_tap.poll() {
                if v["type"] == "reply-chunk" {
                    if let Some(slot) = (0..n_turns).rev().find(|&i| logs[i].pipeline_turn.is_some() && logs[i].pipeline_turn == v["turn"].as_u64()) {
                        logs[slot].answer.push(v["text"].as_str().unwrap_or("").to_string());
                    }
                }
            }

            // Reply tracking for the turn we are waiting on.
            if current < n_turns && speaking.is_none() {
                if let Some(end) = logs[current].end_tick {
                    if voiced && tick >= end {
                        logs[current].reply_start_tick.get_or_insert(tick);
                        logs[current].reply_last_voice_tick = Some(tick);
                    }
                    silent_run = if voiced { 0 } else { silent_run + 1 };
                    let next_barge = self.script.0.get(current + 1).and_then(|p| p.barge_after_ms);
                    let advance = match (logs[current].reply_start_tick, next_barge) {
                        (Some(s), Some(ms)) => tick >= s + (ms as usize) / 10,
                        (Some(_), None) => silent_run >= self.reply_silence_ticks,
                        (None, _) => tick >= end + self.reply_timeout_ticks,
                    };
                    if advance {
                        if logs[current].reply_start_tick.is_none() {
                            log::warn!("turn {}: no reply within the timeout", current + 1);
                        }
                        current += 1;
                        next_start_tick = tick + 1;
                        silent_run = 0;
                        if current == n_turns {
                            done_tick = Some(tick);
                        }
                    }
                }
            } else if current < n_turns && voiced {
                // Reply audio while the caller speaks: the previous turn's reply is still going.
                if current > 0 {
                    logs[current - 1].reply_last_voice_tick = Some(tick);
                }
            }
            if let Some(d) = done_tick {
                if tick >= d + 20 {
                    break;
                }
            }
            tick += 1;
        }
        if call_events {
            let reason = if self.hung_up_at.is_some() { "ended" } else { "hung-up" };
            self.send_event(Event::new(tgvoice::event::kind::CALL_END).with("call", call_id).with("reason", reason));
        }
        Ok(self.report(&logs))
    }

    fn report(&self, logs: &[TurnLog]) -> Report {
        let mut turns = vec![];
        let mut v2v = vec![];
        let mut barge = vec![];
        for (i, (plan, l)) in self.script.0.iter().zip(logs).enumerate() {
            let ms = |t: Option<usize>| t.map(|t| t as f64 * 10.0);
            let voice_to_voice = match (l.end_tick, l.reply_start_tick) {
                (Some(e), Some(r)) => Some((r - e) as f64 * 10.0),
                _ => None,
            };
            if let Some(x) = voice_to_voice {
                v2v.push(x);
            }
            // Barge-in: from this turn's speech onset until the previous reply went silent.
            let barge_in_ms = match (plan.barge_after_ms, l.onset_tick) {
                (Some(_), Some(onset)) => self.stop_after(onset).map(|stop| (stop - onset) as f64 * 10.0),
                _ => None,
            };
            if let Some(b) = barge_in_ms {
                barge.push(b);
            }
            // After a barge-in went silent: from the caller's last sound to the assistant's
            // next audio (a false alarm's reply resuming; after a real interruption, its answer).
            let resume_ms = match (plan.barge_after_ms, l.onset_tick, l.end_tick) {
                (Some(_), Some(onset), Some(end)) => self.stop_after(onset).and_then(|stop| {
                    let next = (stop..self.assistant_voiced.len()).find(|t| self.assistant_voiced[*t])?;
                    Some((next as f64 - end as f64) * 10.0)
                }),
                _ => None,
            };
            turns.push(json!({
                "turn": i + 1,
                "wav": plan.wav.display().to_string(),
                "barge_in": plan.barge_after_ms.is_some(),
                "speech_onset_ms": ms(l.onset_tick),
                "speech_end_ms": ms(l.end_tick),
                "reply_start_ms": ms(l.reply_start_tick),
                "voice_to_voice_ms": voice_to_voice,
                "barge_in_stop_ms": barge_in_ms,
                "barge_in_resume_ms": resume_ms,
                "heard": l.heard.join(" "),
                "answer": l.answer.join(" "),
            }));
        }
        let summary = json!({
            "summary": true,
            "turns": self.script.0.len(),
            "answered": logs.iter().filter(|l| l.reply_start_tick.is_some()).count(),
            "voice_to_voice_ms": v2v,
            "barge_in_stop_ms": barge,
            "input_worst_write_ms": self.input.worst_write.as_secs_f64() * 1000.0,
            "input_worst_blocking_write_ms": self.input.worst_blocking_write.as_secs_f64() * 1000.0,
            "input_blocking_writes": self.input.blocking_writes,
            "input_dropped_chunks": self.input.dropped_chunks,
            "assistant_audio_s": self.assistant_voiced.iter().filter(|v| **v).count() as f64 / 100.0,
            // Who ended the call: the assistant (`hangup` on line.frames) or the caller (the
            // script ran out), and when (ms).
            "ended_by": if self.hung_up_at.is_some() { "assistant" } else { "caller" },
            "ended_ms": self.hung_up_at.map(|t| t as f64 * 10.0),
        });
        Report { turns, summary }
    }

    /// First tick at or after `from` that starts a run of assistant silence long enough to
    /// count as "stopped talking".
    fn stop_after(&self, from: usize) -> Option<usize> {
        let v = &self.assistant_voiced;
        let mut t = from;
        while t + STOP_SILENCE_TICKS <= v.len() {
            if v[t..t + STOP_SILENCE_TICKS].iter().all(|x| !x) {
                return Some(t);
            }
            t += 1;
        }
        None
    }

    pub fn assistant_track(&self) -> &[i16] {
        &self.assistant_track
    }

    pub fn write_stereo(&self, path: &Path) -> Result<()> {
        let spec = hound::WavSpec { channels: 2, sample_rate: RATE as u32, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut w = hound::WavWriter::create(path, spec).with_context(|| format!("cannot write {}", path.display()))?;
        let n = self.caller_track.len().max(self.assistant_track.len());
        for i in 0..n {
            w.write_sample(*self.caller_track.get(i).unwrap_or(&0))?;
            w.write_sample(*self.assistant_track.get(i).unwrap_or(&0))?;
        }
        w.finalize()?;
        Ok(())
    }
}
