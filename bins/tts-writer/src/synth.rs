//! The synthesis thread: speaks queued reply chunks with the engine, resamples each to 48 kHz
//! and hands the audio to the player as soon as each piece (a sentence for Piper) is ready, so
//! the first sentence plays while later ones are synthesised. Work for a turn below the cancel
//! barrier is skipped, and an utterance in progress is abandoned at its next piece.
//! A `reply-ahead` chunk (a reply llm-relay holds until the caller's turn is confirmed) is
//! spoken at once and kept; its `reply-chunk` then plays it without waiting for the engine
//! (or, if it comes while the chunk is still being spoken, what is ready and the rest as it
//! comes).

use crate::engine::{Audio, SpeechEngine};
use crate::player::{PlayerMsg, RATE};
use crossbeam_channel::{Receiver, Sender};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tgvoice::resample::StreamResampler;
use tgvoice::TurnTrace;

/// Work for the synthesis thread, in input order.
pub enum SynthJob {
    Chunk { turn: u64, seq: u64, text: String, trace: TurnTrace },
    /// `reply-ahead`: speak this now but keep the audio; it plays only if the same chunk
    /// (turn, seq, text) is then asked for.
    Ahead { turn: u64, seq: u64, text: String },
    End { turn: u64 },
    /// Call control (`hangup`, `transfer`): to the player, in order behind the audio before it.
    Line(tgvoice::Event),
}

/// Fade length at each utterance edge (native-rate samples per ms × 2 ms), so joins never click.
const EDGE_FADE_MS: f64 = 2.0;

/// A chunk spoken ahead of its `reply-chunk` (at most one is kept: the newest).
struct Spoken {
    turn: u64,
    seq: u64,
    text: String,
    /// 48 kHz pieces with where in `text` each one's words are; the last one is the
    /// resampler's tail.
    pieces: Vec<(Vec<i16>, Option<Range<usize>>)>,
    ready: Instant,
}

/// The newest `reply-chunk` the input thread accepted, so that a chunk being spoken ahead can
/// start playing the moment it is asked for, before its job reaches the synthesis thread.
#[derive(Clone, Default)]
pub struct Asked(Arc<Mutex<Option<(u64, u64, String, TurnTrace)>>>);

impl Asked {
    pub fn set(&self, turn: u64, seq: u64, text: &str, trace: &TurnTrace) {
        *self.0.lock().unwrap() = Some((turn, seq, text.to_string(), trace.clone()));
    }

    /// The trace of the chunk if (turn, seq, text) was asked for.
    fn asked_for(&self, turn: u64, seq: u64, text: &str) -> Option<TurnTrace> {
        let asked = self.0.lock().unwrap();
        let (t, s, x, trace) = asked.as_ref()?;
        (*t == turn && *s == seq && x == text).then(|| trace.clone())
    }
}

pub fn run(
    mut engine: Box<dyn SpeechEngine>,
    jobs: Receiver<SynthJob>,
    player: Sender<PlayerMsg>,
    barrier: Arc<AtomicU64>,
    asked: Asked,
) {
    lower_thread_priority();
    let mut ahead: Option<Spoken> = None;
    // a chunk played while it was spoken ahead: its own job finds it done
    let mut played_live: Option<(u64, u64)> = None;
    for job in jobs {
        match job {
            SynthJob::Line(event) => {
                let _ = player.send(PlayerMsg::Line(event));
            }
            SynthJob::End { turn } => {
                let _ = player.send(PlayerMsg::TurnEnd { turn });
            }
            SynthJob::Ahead { turn, seq, text } => {
                if turn < barrier.load(Ordering::SeqCst) {
                    continue;
                }
                let t0 = Instant::now();
                let mut pieces = vec![];
                // asked for while it is being spoken: from then on its pieces go straight out
                let mut live = false;
                let complete = speak(&mut *engine, &text, turn, seq, &barrier, |samples, piece_span, last| {
                    if !live {
                        if let Some(trace) = asked.asked_for(turn, seq, &text) {
                            let _ = player.send(PlayerMsg::ChunkQueued { turn, seq, text: text.clone(), trace });
                            for (samples, span) in pieces.drain(..) {
                                let _ = player.send(PlayerMsg::Audio { turn, seq, samples, span, last: false });
                            }
                            live = true;
                        }
                    }
                    if live {
                        let _ = player.send(PlayerMsg::Audio { turn, seq, samples, span: piece_span, last });
                    } else {
                        pieces.push((samples, piece_span));
                    }
                });
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                if live {
                    log::info!("turn {turn} chunk {seq}: asked for while spoken ahead; played as it was spoken ({ms:.0} ms)");
                    played_live = Some((turn, seq));
                    ahead = None;
                } else {
                    log::debug!("turn {turn} chunk {seq}: spoken ahead in {ms:.0} ms, held");
                    ahead = complete.then(|| Spoken { turn, seq, text, pieces, ready: Instant::now() });
                }
            }
            SynthJob::Chunk { turn, seq, text, trace } => {
                if turn < barrier.load(Ordering::SeqCst) {
                    log::debug!("skipping chunk {seq} of cancelled turn {turn}");
                    continue;
                }
                if played_live.take_if(|p| *p == (turn, seq)).is_some() {
                    continue; // already queued and played while it was spoken ahead
                }
                let _ = player.send(PlayerMsg::ChunkQueued { turn, seq, text: text.clone(), trace });
                if let Some(spoken) = ahead.take_if(|a| a.turn == turn && a.seq == seq && a.text == text) {
                    log::info!(
                        "turn {turn} chunk {seq}: playing the audio spoken ahead ({:.0} ms ago)",
                        spoken.ready.elapsed().as_secs_f64() * 1000.0
                    );
                    let n = spoken.pieces.len();
                    for (i, (samples, span)) in spoken.pieces.into_iter().enumerate() {
                        let _ = player.send(PlayerMsg::Audio { turn, seq, samples, span, last: i + 1 == n });
                    }
                    continue;
                }
                // spoken ahead for words that were not asked for: never heard
                ahead = ahead.filter(|a| a.turn > turn);
                let t0 = Instant::now();
                let mut produced = 0usize;
                speak(&mut *engine, &text, turn, seq, &barrier, |samples, span, last| {
                    produced += samples.len();
                    let _ = player.send(PlayerMsg::Audio { turn, seq, samples, span, last });
                });
                let secs = produced as f64 / RATE as f64;
                log::debug!(
                    "turn {turn} chunk {seq}: {:.2} s of audio in {:.0} ms (RTF {:.2}) with {}",
                    secs,
                    t0.elapsed().as_secs_f64() * 1000.0,
                    if secs > 0.0 { t0.elapsed().as_secs_f64() / secs } else { 0.0 },
                    engine.name()
                );
            }
        }
    }
}

/// Speak `text` with the engine, resampled to 48 kHz, handing each piece to `out` as it is
/// ready, then the resampler's tail (possibly empty) as the final piece (`last`). Returns false if the
/// turn was cancelled or the engine failed on the way (what was handed out stands).
fn speak(
    engine: &mut dyn SpeechEngine,
    text: &str,
    turn: u64,
    seq: u64,
    barrier: &AtomicU64,
    mut out: impl FnMut(Vec<i16>, Option<Range<usize>>, bool),
) -> bool {
    let mut resampler: Option<(u32, StreamResampler)> = None;
    let mut complete = true;
    let mut emit = |mut audio: Audio| -> bool {
        if turn < barrier.load(Ordering::SeqCst) {
            complete = false;
            return false;
        }
        if audio.samples.is_empty() {
            return true; // an engine waiting on a server asking whether to go on
        }
        if audio.edges {
            fade_edges(&mut audio.samples, audio.rate);
        }
        let mut samples = vec![];
        if resampler.as_ref().map(|(r, _)| *r) != Some(audio.rate) {
            if let Some((_, mut old)) = resampler.take() {
                samples.extend(old.flush());
            }
            match StreamResampler::new(audio.rate, RATE, (audio.rate / 50) as usize) {
                Ok(r) => resampler = Some((audio.rate, r)),
                Err(e) => {
                    log::error!("{e:#}");
                    complete = false;
                    return false;
                }
            }
        }
        samples.extend(resampler.as_mut().expect("set above").1.process(&audio.samples));
        out(samples, audio.span, false);
        true
    };
    if let Err(e) = engine.synthesize(text, &mut emit) {
        log::error!("{} could not speak chunk {seq} of turn {turn}: {e:#}", engine.name());
        complete = false;
    }
    let tail = resampler.take().map(|(_, mut r)| r.flush()).unwrap_or_default();
    out(tail, None, true);
    complete && turn >= barrier.load(Ordering::SeqCst)
}

/// A short linear fade-in and fade-out, so utterances start and end at zero.
pub fn fade_edges(samples: &mut [i16], rate: u32) {
    let n = ((rate as f64 * EDGE_FADE_MS / 1000.0) as usize).min(samples.len() / 2);
    let len = samples.len();
    for i in 0..n {
        let g = i as f32 / n as f32;
        samples[i] = (samples[i] as f32 * g) as i16;
        samples[len - 1 - i] = (samples[len - 1 - i] as f32 * g) as i16;
    }
}

/// Synthesis is the CPU hog of this program; on a busy machine it must not delay the threads
/// that read cancels and write audio. Linux applies `setpriority` to a single thread (by tid).
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0 {
            log::debug!("cannot lower the synthesis thread's priority: {}", std::io::Error::last_os_error());
        }
    }
}
