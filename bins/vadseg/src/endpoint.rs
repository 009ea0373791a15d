//! [`Endpointer`]: when a pause ends the turn. Without a turn model, after `--eot-silence`.
//! With one (Smart Turn, see turn_model.rs), the model is asked once the pause reaches
//! `--turn-check`; a "complete" answer ends the turn at `--eot-complete` of silence, an
//! "incomplete" one lets the caller pause up to `--eot-incomplete`. The segmenter reports the
//! pause; the answer arrives later from the worker thread ([`Endpointer::set_verdict`]).
//!
//! Pauses are numbered: speech resuming starts a new number, so a late answer about an
//! earlier pause is ignored.

/// Why a turn ended: the `eot_reason` field of `speech-end` (fifo-layout.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EotReason {
    /// The turn model judged the turn complete, after `--eot-complete` of silence.
    TurnModel,
    /// Silence alone: `--eot-silence` (no model, or its answer failed) or `--eot-incomplete`.
    Silence,
    /// Cut at `--max-segment` (the next turn `continues` it).
    MaxLength,
    /// The input ended, broke off (writer gone) or a call boundary arrived.
    InputEnd,
}

impl EotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EotReason::TurnModel => "turn-model",
            EotReason::Silence => "silence",
            EotReason::MaxLength => "max-length",
            EotReason::InputEnd => "input-end",
        }
    }
}

/// Timings of the turn-model path (all silence after the last voiced chunk, in ms).
#[derive(Debug, Clone)]
pub struct TurnModelConfig {
    /// Pause at which the model is asked.
    pub check_ms: u32,
    /// The model's probability of "complete" at or above which the turn may end early.
    pub threshold: f32,
    /// Silence that ends a turn the model judged complete.
    pub complete_ms: u32,
    /// Silence that ends a turn the model judged incomplete.
    pub incomplete_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    NotAsked,
    Asked,
    /// Probability that the turn is complete.
    Answered(f32),
    /// The model failed on this pause: fall back to `--eot-silence`.
    Failed,
}

/// What the segmenter should do at this point of a pause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PauseStep {
    Wait,
    /// Ask the turn model about pause number `pause`.
    Ask { pause: u64 },
    End(EotReason),
}

#[derive(Debug)]
pub struct Endpointer {
    eot_silence_ms: u32,
    model: Option<TurnModelConfig>,
    pause: u64,
    verdict: Verdict,
}

impl Endpointer {
    pub fn new(eot_silence_ms: u32, model: Option<TurnModelConfig>) -> Self {
        Endpointer { eot_silence_ms, model, pause: 0, verdict: Verdict::NotAsked }
    }

    /// Speech (re)started: any pause so far is over.
    pub fn speech(&mut self) {
        if self.verdict != Verdict::NotAsked {
            log::debug!("pause {}: speech resumed ({:?})", self.pause, self.verdict);
        }
        self.pause += 1;
        self.verdict = Verdict::NotAsked;
    }

    /// The pause has lasted `silence_ms`.
    pub fn step(&mut self, silence_ms: u32) -> PauseStep {
        let Some(m) = &self.model else {
            return if silence_ms >= self.eot_silence_ms { PauseStep::End(EotReason::Silence) } else { PauseStep::Wait };
        };
        match self.verdict {
            Verdict::NotAsked if silence_ms >= m.check_ms => {
                self.verdict = Verdict::Asked;
                PauseStep::Ask { pause: self.pause }
            }
            Verdict::Answered(p) if p >= m.threshold && silence_ms >= m.complete_ms => PauseStep::End(EotReason::TurnModel),
            Verdict::Failed if silence_ms >= self.eot_silence_ms => PauseStep::End(EotReason::Silence),
            _ if silence_ms >= m.incomplete_ms => PauseStep::End(EotReason::Silence),
            _ => PauseStep::Wait,
        }
    }

    /// The model's answer about pause `pause` (None: it failed). False when that pause is over.
    pub fn set_verdict(&mut self, pause: u64, p_complete: Option<f32>) -> bool {
        if pause != self.pause || self.verdict != Verdict::Asked {
            return false;
        }
        self.verdict = p_complete.map_or(Verdict::Failed, Verdict::Answered);
        true
    }

    /// The pause number whose answer is needed before the pause can be judged further: the
    /// model was asked and the silence has reached `--eot-complete`.
    pub fn awaiting(&self, silence_ms: u32) -> Option<u64> {
        match (&self.model, self.verdict) {
            (Some(m), Verdict::Asked) if silence_ms >= m.complete_ms => Some(self.pause),
            _ => None,
        }
    }

    /// The model's probability for the current pause, if it answered.
    pub fn p_complete(&self) -> Option<f32> {
        match self.verdict {
            Verdict::Answered(p) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> TurnModelConfig {
        TurnModelConfig { check_ms: 160, threshold: 0.5, complete_ms: 250, incomplete_ms: 1600 }
    }

    /// Steps over a pause in 32 ms chunks until the end; `answer` is given when asked.
    fn pause_end(e: &mut Endpointer, answer: Option<f32>) -> (u32, EotReason) {
        e.speech();
        let mut silence = 0;
        loop {
            silence += 32;
            match e.step(silence) {
                PauseStep::Ask { pause } => assert!(e.set_verdict(pause, answer)),
                PauseStep::End(r) => return (silence, r),
                PauseStep::Wait => {}
            }
        }
    }

    #[test]
    fn without_a_model_silence_alone_ends_the_turn() {
        assert_eq!(pause_end(&mut Endpointer::new(600, None), None), (608, EotReason::Silence));
    }

    #[test]
    fn complete_ends_early_incomplete_waits_and_failure_falls_back() {
        let mut e = Endpointer::new(600, Some(model()));
        assert_eq!(pause_end(&mut e, Some(0.9)), (256, EotReason::TurnModel));
        assert_eq!(e.p_complete(), Some(0.9));
        assert_eq!(pause_end(&mut e, Some(0.1)), (1600, EotReason::Silence));
        assert_eq!(pause_end(&mut e, None), (608, EotReason::Silence));
    }

    #[test]
    fn an_answer_about_an_earlier_pause_is_ignored_and_the_current_one_is_awaited() {
        let mut e = Endpointer::new(600, Some(model()));
        e.speech();
        let PauseStep::Ask { pause } = e.step(160) else { panic!() };
        assert_eq!(e.awaiting(192), None, "not needed before --eot-complete");
        assert_eq!(e.awaiting(256), Some(pause));
        e.speech(); // the caller went on
        assert!(!e.set_verdict(pause, Some(0.99)));
        assert_eq!(e.step(256), PauseStep::Ask { pause: pause + 1 }, "the new pause is asked about afresh");
        assert_eq!(e.step(288), PauseStep::Wait);
    }
}
