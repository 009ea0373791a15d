//! [`TranscriptionWorker`]: the thread that owns the [`Transcriber`] (the [`WhisperEngine`] or
//! the [`MoonshineEngine`] in the program). The stage hands it one [`Job`] at a time and keeps
//! forwarding urgent events while the model runs; a job can be aborted mid-way through its
//! abort flag (whisper.cpp polls it between graph steps, Moonshine between decoder steps).

use crate::engine::{Transcription, WhisperEngine};
use crate::moonshine::MoonshineEngine;
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Speech to text, as the stage needs it: the seam between the turn logic and the engines
/// (`--engine whisper|moonshine`), so the stage's rules — speculation, previews, the
/// hallucination guard — hold for both and are unit-tested with a scripted fake.
pub trait Transcriber: Send + 'static {
    /// Transcribe a turn's 16 kHz mono samples; `abort` set by another thread stops the call
    /// early (the result is then marked `aborted`).
    fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription>;
    /// [`transcribe`](Self::transcribe), handing `first_pass` an early result that the engine
    /// is about to decode again (an unsure first pass), so the stage can preview it.
    fn transcribe_reporting_first_pass(
        &mut self,
        samples: &[f32],
        abort: Option<Arc<AtomicBool>>,
        first_pass: &mut dyn FnMut(&Transcription),
    ) -> anyhow::Result<Transcription> {
        let _ = first_pass;
        self.transcribe(samples, abort)
    }
    /// Prepare the next call's state; run between jobs, off the stage's clock.
    fn fresh_state(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// One line on the model and its settings (logged at start, printed by --check-model).
    fn describe(&self) -> String {
        String::new()
    }
    /// Decode a second of silence so the first turn does not pay for the engine's buffers;
    /// returns the milliseconds it took.
    fn warm_up(&mut self) -> anyhow::Result<f64> {
        Ok(0.0)
    }
    /// What `--check-model` runs: the warm-up for an engine in this process; a server engine
    /// overrides it with a real request, so "ok" means the server answered.
    fn check(&mut self) -> anyhow::Result<f64> {
        self.warm_up()
    }
}

/// A server engine's check: one second of a quiet 220 Hz tone sent as a turn (a server has no
/// warm-up of ours to run, and a settings check that never reached it would say "ok" to a
/// mistyped URL; pure silence is refused by some servers as no audio).
fn check_by_request(engine: &mut dyn Transcriber) -> anyhow::Result<f64> {
    let rate = crate::engine::SAMPLE_RATE as f32;
    let tone: Vec<f32> = (0..crate::engine::SAMPLE_RATE).map(|i| 0.05 * (std::f32::consts::TAU * 220.0 * i as f32 / rate).sin()).collect();
    let t0 = std::time::Instant::now();
    engine.transcribe(&tone, None).map_err(|e| {
        tgvoice::cli::fail(tgvoice::cli::exit::UNAVAILABLE, format!("{e:#}; check --stt-url and that the server is running"))
    })?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

impl Transcriber for WhisperEngine {
    fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
        WhisperEngine::transcribe(self, samples, abort)
    }
    fn transcribe_reporting_first_pass(
        &mut self,
        samples: &[f32],
        abort: Option<Arc<AtomicBool>>,
        first_pass: &mut dyn FnMut(&Transcription),
    ) -> anyhow::Result<Transcription> {
        WhisperEngine::transcribe_reporting_first_pass(self, samples, abort, first_pass)
    }
    fn fresh_state(&mut self) -> anyhow::Result<()> {
        WhisperEngine::fresh_state(self)
    }
    fn describe(&self) -> String {
        WhisperEngine::describe(self)
    }
    fn warm_up(&mut self) -> anyhow::Result<f64> {
        WhisperEngine::warm_up(self)
    }
}

impl Transcriber for MoonshineEngine {
    fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
        MoonshineEngine::transcribe(self, samples, abort)
    }
    fn describe(&self) -> String {
        MoonshineEngine::describe(self)
    }
    fn warm_up(&mut self) -> anyhow::Result<f64> {
        MoonshineEngine::warm_up(self)
    }
}

impl Transcriber for crate::openai::OpenAiEngine {
    fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
        crate::openai::OpenAiEngine::transcribe(self, samples, abort)
    }
    fn describe(&self) -> String {
        crate::openai::OpenAiEngine::describe(self)
    }
    fn check(&mut self) -> anyhow::Result<f64> {
        check_by_request(self)
    }
}

impl Transcriber for crate::wyoming::WyomingEngine {
    fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
        crate::wyoming::WyomingEngine::transcribe(self, samples, abort)
    }
    fn describe(&self) -> String {
        crate::wyoming::WyomingEngine::describe(self)
    }
    fn check(&mut self) -> anyhow::Result<f64> {
        check_by_request(self)
    }
}

/// The engine `--engine` chose, whichever it is.
/// Every method is forwarded: a default body here would hide the engine's own (Whisper's
/// unsure first pass would never be previewed).
impl Transcriber for Box<dyn Transcriber> {
    fn transcribe(&mut self, samples: &[f32], abort: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
        (**self).transcribe(samples, abort)
    }
    fn transcribe_reporting_first_pass(
        &mut self,
        samples: &[f32],
        abort: Option<Arc<AtomicBool>>,
        first_pass: &mut dyn FnMut(&Transcription),
    ) -> anyhow::Result<Transcription> {
        (**self).transcribe_reporting_first_pass(samples, abort, first_pass)
    }
    fn fresh_state(&mut self) -> anyhow::Result<()> {
        (**self).fresh_state()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn warm_up(&mut self) -> anyhow::Result<f64> {
        (**self).warm_up()
    }
    fn check(&mut self) -> anyhow::Result<f64> {
        (**self).check()
    }
}

/// Why a job was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// The turn has ended: its transcript is wanted now.
    Final,
    /// The turn is still open: speculative (at a pause) or for a partial transcript.
    Early,
}

pub struct Job {
    pub id: u64,
    pub turn: u64,
    pub samples: Arc<Vec<f32>>,
    pub abort: Arc<AtomicBool>,
}

pub struct JobDone {
    pub id: u64,
    pub turn: u64,
    pub samples: Arc<Vec<f32>>,
    /// `Ok(None)`: aborted before or during the run.
    pub result: Result<Option<Transcription>, String>,
    /// Not the job's end: its unsure first pass, sent while the re-decode runs.
    pub first_pass: bool,
}

pub struct TranscriptionWorker {
    jobs: Sender<Job>,
    pub done: Receiver<JobDone>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The longest a dropped worker waits for its thread to free the engine.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Drop for TranscriptionWorker {
    /// Close the job queue and wait for the thread to end, so the engine is freed before the
    /// process exits: whisper.cpp's context freed on a thread while `exit` runs the C++ static
    /// destructors crashed sttd at the end of its input (exit 139, seen in CI).
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.jobs, unbounded().0));
        let Some(thread) = self.thread.take() else { return };
        let since = std::time::Instant::now();
        while !thread.is_finished() && since.elapsed() < STOP_WAIT {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            log::warn!("the transcriber thread is still busy after {} s; exiting without it", STOP_WAIT.as_secs());
        }
    }
}

impl TranscriptionWorker {
    pub fn spawn(mut engine: impl Transcriber) -> std::io::Result<Self> {
        let (jobs, job_rx) = unbounded::<Job>();
        let (done_tx, done) = unbounded();
        let thread = std::thread::Builder::new().name("transcriber".into()).spawn(move || {
            for job in job_rx {
                let result = if job.abort.load(Ordering::Relaxed) {
                    Ok(None)
                } else {
                    let mut first_pass = |t: &Transcription| {
                        let early = JobDone { id: job.id, turn: job.turn, samples: job.samples.clone(), result: Ok(Some(t.clone())), first_pass: true };
                        let _ = done_tx.send(early);
                    };
                    match engine.transcribe_reporting_first_pass(&job.samples, Some(job.abort.clone()), &mut first_pass) {
                        Ok(t) if t.aborted => Ok(None),
                        Ok(t) => Ok(Some(t)),
                        Err(e) => Err(format!("{e:#}")),
                    }
                };
                let msg = JobDone { id: job.id, turn: job.turn, samples: job.samples, result, first_pass: false };
                if done_tx.send(msg).is_err() {
                    break;
                }
                // The next job starts on a clean state; made now, while the stage is busy
                // with this result, rather than on the next turn's clock.
                if let Err(e) = engine.fresh_state() {
                    log::error!("{e:#}; the next transcription will try again");
                }
            }
        })?;
        Ok(TranscriptionWorker { jobs, done, thread: Some(thread) })
    }

    pub fn submit(&self, job: Job) {
        // The worker only stops when this sender is dropped, so sending cannot fail while we live.
        let _ = self.jobs.send(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine that reports a first pass and says which of its methods ran.
    struct Reporting;

    impl Transcriber for Reporting {
        fn transcribe(&mut self, _: &[f32], _: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
            Ok(Transcription { text: "plain".into(), ..Default::default() })
        }
        fn transcribe_reporting_first_pass(
            &mut self,
            _: &[f32],
            _: Option<Arc<AtomicBool>>,
            first_pass: &mut dyn FnMut(&Transcription),
        ) -> anyhow::Result<Transcription> {
            first_pass(&Transcription { text: "early".into(), ..Default::default() });
            Ok(Transcription { text: "late".into(), ..Default::default() })
        }
        fn describe(&self) -> String {
            "reporting".into()
        }
        fn warm_up(&mut self) -> anyhow::Result<f64> {
            Ok(7.0)
        }
    }

    #[test]
    fn the_engine_chosen_by_flag_behaves_as_the_engine_itself() {
        let mut boxed: Box<dyn Transcriber> = Box::new(Reporting);
        let mut seen = vec![];
        let t = boxed.transcribe_reporting_first_pass(&[0.0; 160], None, &mut |t| seen.push(t.text.clone())).unwrap();
        assert_eq!((t.text.as_str(), seen), ("late", vec!["early".to_string()]));
        assert_eq!(boxed.transcribe(&[0.0; 160], None).unwrap().text, "plain");
        assert_eq!((boxed.describe(), boxed.warm_up().unwrap()), ("reporting".to_string(), 7.0));
    }

    /// An engine that takes a while to free itself (whisper.cpp's context) and says when it has.
    struct SlowToFree(Arc<AtomicBool>);

    impl Drop for SlowToFree {
        fn drop(&mut self) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Transcriber for SlowToFree {
        fn transcribe(&mut self, _: &[f32], _: Option<Arc<AtomicBool>>) -> anyhow::Result<Transcription> {
            Ok(Transcription::default())
        }
        fn describe(&self) -> String {
            "slow to free".into()
        }
        fn warm_up(&mut self) -> anyhow::Result<f64> {
            Ok(0.0)
        }
    }

    #[test]
    fn a_dropped_worker_has_freed_its_engine_before_the_process_may_exit() {
        let freed = Arc::new(AtomicBool::new(false));
        let worker = TranscriptionWorker::spawn(SlowToFree(freed.clone())).unwrap();
        worker.submit(Job { id: 1, turn: 1, samples: Arc::new(vec![0.0; 160]), abort: Arc::new(AtomicBool::new(false)) });
        worker.done.recv_timeout(std::time::Duration::from_secs(5)).expect("the job ends");
        drop(worker);
        assert!(freed.load(Ordering::SeqCst), "the engine was still being freed when the worker's drop returned");
    }
}
