//! What the engines over the wire share ([`crate::openai`], [`crate::wyoming`]): the turn's
//! audio as the server gets it, the time budget of a decode and its one retry, the API key,
//! and the shape of their errors (one line naming the server and the cause).
//!
//! The rules, the same for both: a decode sends [`decode_input`] (the turn's speech and
//! 200 ms of silence, as the local engines get it, so a decode at a pause and the final one
//! send the same audio when only silence came in between); it gives up at `--stt-timeout`
//! after it started, whatever happens inside; a failure of the connection (refused, reset,
//! closed before the answer was whole) or a 5xx is tried once more if the budget has time
//! left; a set abort flag (a superseded speculative decode) closes the connection at once.

use crate::engine::{decode_input, Transcription, SAMPLE_RATE};
use crate::guard::cut_loop;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable the API key is read from (never a flag, so it is in no process
/// list, and never logged).
pub const KEY_ENV: &str = "TGVOICE_STT_API_KEY";
/// How often a wait on the server looks at the abort flag.
pub const ABORT_POLL: Duration = Duration::from_millis(10);
/// The pause before the one retry after a failed connection.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The turn's samples as the server gets them: [`decode_input`] as 16-bit PCM.
pub fn pcm16(samples: &[f32]) -> Vec<i16> {
    decode_input(samples).iter().map(|s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// `samples` (16 kHz mono) as a 16-bit WAV file in memory.
pub fn wav_bytes(samples: &[i16]) -> Vec<u8> {
    tgvoice::resample::wav_mono_bytes(SAMPLE_RATE, samples)
}

/// Why one attempt failed.
#[derive(Debug)]
pub struct Failure {
    /// The cause, as said in the log line ("HTTP 500 Internal Server Error: …").
    pub cause: String,
    /// Worth one more try (the connection failed, or a 5xx) if the budget allows.
    pub retry: bool,
}

impl Failure {
    pub fn retry(cause: impl Into<String>) -> Self {
        Failure { cause: cause.into(), retry: true }
    }
    pub fn fatal(cause: impl Into<String>) -> Self {
        Failure { cause: cause.into(), retry: false }
    }
}

/// How one attempt ended.
pub enum Attempt {
    Text(String),
    Failed(Failure),
    /// The budget ran out while waiting.
    TimedOut,
    /// The abort flag was set: the decode was superseded.
    Aborted,
}

/// The decode's clock: when it started, when it must give up, and the abort flag.
pub struct Budget {
    pub started: Instant,
    pub deadline: Instant,
    pub abort: Option<Arc<AtomicBool>>,
}

impl Budget {
    pub fn new(timeout: Duration, abort: Option<Arc<AtomicBool>>) -> Self {
        let started = Instant::now();
        Budget { started, deadline: started + timeout, abort }
    }

    pub fn aborted(&self) -> bool {
        self.abort.as_ref().is_some_and(|a| a.load(Ordering::Relaxed))
    }

    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Run `attempt` (the engine's exchange with the server) at most twice within `budget`, and
/// make the result a [`Transcription`] or the one-line error naming `server`.
pub fn transcribe_with_retry(
    server: &str,
    timeout: Duration,
    samples: &[f32],
    abort: Option<Arc<AtomicBool>>,
    mut attempt: impl FnMut(&[i16], &Budget) -> Attempt,
) -> anyhow::Result<Transcription> {
    let budget = Budget::new(timeout, abort);
    let audio = pcm16(samples);
    let mut tries = 0;
    let stopped = |b: &Budget| Ok(Transcription { aborted: true, elapsed_ms: b.started.elapsed().as_secs_f64() * 1e3, ..Default::default() });
    loop {
        if budget.aborted() {
            return stopped(&budget);
        }
        tries += 1;
        let failure = match attempt(&audio, &budget) {
            Attempt::Text(text) => return Ok(transcription(text, audio.len(), budget.started)),
            Attempt::Aborted => return stopped(&budget),
            Attempt::TimedOut => {
                anyhow::bail!("{server}: no answer within the {:.1} s budget (--stt-timeout){}", timeout.as_secs_f64(), tried(tries))
            }
            Attempt::Failed(f) => f,
        };
        if !failure.retry || tries >= 2 || budget.left() <= RETRY_PAUSE {
            anyhow::bail!("{server}: {}{}", failure.cause, tried(tries));
        }
        log::debug!("{server}: {}; trying once more", failure.cause);
        let until = Instant::now() + RETRY_PAUSE;
        while Instant::now() < until && !budget.aborted() {
            std::thread::sleep(ABORT_POLL);
        }
    }
}

fn tried(tries: u32) -> &'static str {
    if tries > 1 {
        " (tried twice)"
    } else {
        ""
    }
}

/// A server's text as the stage takes it: a repetition loop cut to one copy; no
/// log-probabilities or no-speech probability (the guard's level, noise and stock-phrase
/// checks still apply).
fn transcription(text: String, input_len: usize, started: Instant) -> Transcription {
    let (text, loop_cut) = match cut_loop(&text) {
        Some(cut) => (cut, true),
        None => (text.trim().to_string(), false),
    };
    Transcription { text, loop_cut, input_len, elapsed_ms: started.elapsed().as_secs_f64() * 1e3, ..Default::default() }
}

/// The API key: from `--stt-key-file` (which must be readable by its owner alone), else from
/// [`KEY_ENV`], else none (a local server without one).
pub fn api_key(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    Ok(tgvoice::secret::api_key("--stt-key-file", file, KEY_ENV)?.map(|k| k.expose().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_transcript_claims_no_scores_in_the_log() {
        let t = transcription("  Hello there. ".into(), 16000, Instant::now());
        assert_eq!((t.text.as_str(), t.scores()), ("Hello there.", String::new()));
        let whisper = Transcription { no_speech_prob: Some(0.02), avg_logprob: -0.314, n_tokens: 4, ..Default::default() };
        assert_eq!(whisper.scores(), ", no-speech 0.02, logprob -0.31");
    }

    #[test]
    fn the_wav_is_16_khz_mono_16_bit_with_the_samples() {
        let wav = wav_bytes(&[0, 1000, -1000]);
        let (rate, samples) = tgvoice::resample::read_wav_mono(std::io::Cursor::new(&wav)).unwrap();
        assert_eq!((rate, samples), (16_000, vec![0, 1000, -1000]));
        assert_eq!(wav.len(), 44 + 6);
    }

    #[test]
    fn a_key_file_open_to_others_is_refused_and_one_of_the_owners_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-test-123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = api_key(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("0644") && !e.contains("sk-test"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(api_key(Some(&path)).unwrap().as_deref(), Some("sk-test-123"));
    }

    #[test]
    fn one_retry_for_a_failed_connection_none_for_a_bad_answer() {
        let mut calls = 0;
        let t = transcribe_with_retry("srv", Duration::from_secs(2), &[0.1; 1600], None, |_, _| {
            calls += 1;
            if calls == 1 {
                Attempt::Failed(Failure::retry("connection reset"))
            } else {
                Attempt::Text(" Hello there. ".into())
            }
        })
        .unwrap();
        assert_eq!((t.text.as_str(), calls), ("Hello there.", 2));
        let mut calls = 0;
        let e = transcribe_with_retry("srv", Duration::from_secs(2), &[0.1; 1600], None, |_, _| {
            calls += 1;
            Attempt::Failed(Failure::fatal("not JSON"))
        })
        .unwrap_err();
        assert_eq!((e.to_string(), calls), ("srv: not JSON".to_string(), 1));
        let e = transcribe_with_retry("srv", Duration::from_secs(2), &[0.1; 1600], None, |_, _| Attempt::Failed(Failure::retry("refused"))).unwrap_err();
        assert_eq!(e.to_string(), "srv: refused (tried twice)");
    }
}
