//! vadseg's flags ([`Args`]) and what they become: the segmenter's settings, the checks a
//! value must pass beyond its type, and which turn model file `--turn-model` names. Kept apart
//! from main.rs so the program's wiring reads in one screen.

use crate::endpoint::TurnModelConfig;
use crate::onset::OnsetConfig;
use crate::segmenter::SegmenterConfig;
use clap::Parser;
use std::path::PathBuf;
use tgvoice::cli::{self, exit, LinkArgs, LogArgs};

#[derive(Parser, Debug)]
#[command(
    version,
    mut_arg("format", |a| a.env("VADSEG_FORMAT")),
    about = "Cut speech out of an audio frame stream with Silero VAD: speech-start / 16 kHz segment / speech-end",
    after_help = exit::after_help(&format!("{}\n\n{}", "Examples:\n  tgcat question.wav | vadseg | framecat\n  tgcat --realtime call.wav | vadseg | sttd\n  vadseg -i $RUN/audio.frames -o $RUN/speech.frames\n  ffplay -f s16le -ar 16000 -ac 1 -nodisp $RUN/speech.tap     # listen to the segments\n\nNeeds ONNX Runtime 1.22.1: ORT_DYLIB_PATH=…/libonnxruntime.so.1.22.1 (scripts/env.sh sets it;\nscripts/setup installs it). Turn ids are the speech onset capture time in ms since the epoch.", tgvoice::render::output_help(tgvoice::TextView::Events)), &[(exit::FAILURE, ""), (exit::UNAVAILABLE, "ONNX Runtime or the Silero model is missing"), (exit::CONFIG, "an unsafe link path, a bad VADSEG_* value or a named --turn-model missing")])
)]
pub struct Args {
    #[command(flatten)]
    pub link: LinkArgs,
    /// What the caller's audio came through: "wide" (Telegram, a microphone) or "phone" (an
    /// 8 kHz μ-law line with its noise floor; phone-bridge sets it for its lines). Silero
    /// scores speech from a phone line lower and shorter, so "phone" lowers the default
    /// threshold to 0.35 and the default minimum speech to 96 ms (README "Phone lines").
    #[arg(long, value_enum, default_value_t = Line::Wide, env = "VADSEG_LINE")]
    pub line: Line,
    /// Speech probability at or above which a 32 ms chunk counts as speech (0–1). [default: 0.5]
    /// (0.35 with --line phone)
    #[arg(long, env = "VADSEG_THRESHOLD", value_parser = parse_probability)]
    pub threshold: Option<f32>,
    /// Voiced time (ms) before a run becomes a turn (speech-start; sttd transcribes it). Shorter
    /// runs end in speech-void. Lower lets one-word turns ("Stop.") through; higher turns fewer
    /// coughs into turns for sttd. Barge-in pauses at speech-onset, whatever this is.
    /// [default: 128] (96 with --line phone)
    #[arg(long, env = "VADSEG_MIN_SPEECH_MS", value_name = "MS")]
    pub min_speech: Option<u32>,
    /// Silence (ms) after the last speech that ends the turn when there is no turn model (or it failed).
    #[arg(long, default_value_t = 600, env = "VADSEG_EOT_SILENCE_MS", value_name = "MS")]
    pub eot_silence: u32,
    /// End of turn by meaning: a Smart Turn v3.2 ONNX file, "auto" ($TGVOICE_MODELS/smart-turn-v3.2-cpu.onnx
    /// if scripts/setup installed it, else silence alone), or "off" (silence alone, --eot-silence).
    #[arg(long, default_value = "auto", env = "VADSEG_TURN_MODEL", value_name = "PATH|auto|off")]
    pub turn_model: String,
    /// Pause (ms) at which the turn model is asked.
    #[arg(long, default_value_t = 160, env = "VADSEG_TURN_CHECK_MS", value_name = "MS")]
    pub turn_check: u32,
    /// The turn model's probability of "complete" at or above which the turn ends early (0–1).
    #[arg(long, default_value_t = 0.5, env = "VADSEG_TURN_THRESHOLD", value_parser = parse_probability)]
    pub turn_threshold: f32,
    /// Silence (ms) that ends a turn the model judged complete. Longer than a comma's pause
    /// (~300 ms), after which many callers go on ("a table for, um…").
    #[arg(long, default_value_t = 350, env = "VADSEG_EOT_COMPLETE_MS", value_name = "MS")]
    pub eot_complete: u32,
    /// Silence (ms) that ends a turn the model judged incomplete (a hesitation may last this long).
    #[arg(long, default_value_t = 1200, env = "VADSEG_EOT_INCOMPLETE_MS", value_name = "MS")]
    pub eot_incomplete: u32,
    /// Audio (ms) kept before the first speech chunk, so the first syllable is not clipped.
    #[arg(long, default_value_t = 300, env = "VADSEG_PRE_ROLL_MS", value_name = "MS")]
    pub pre_roll: u32,
    /// Silence (ms) kept after the last speech chunk.
    #[arg(long, default_value_t = 200, env = "VADSEG_POST_ROLL_MS", value_name = "MS")]
    pub post_roll: u32,
    /// Longest segment (s); longer speech is cut into consecutive turns without losing audio.
    #[arg(long, default_value_t = 25.0, env = "VADSEG_MAX_SEGMENT_S", value_name = "S")]
    pub max_segment: f64,
    /// Echo gate: the played audio (raw s16le 48 kHz FIFO, e.g. $RUN/tg_output.tap). Input well
    /// below what was just played counts as silence, so the assistant's own voice coming back
    /// through speakers and a microphone does not interrupt it. Off by default (phones cancel
    /// echo; vadseg would hold the tap).
    #[arg(long, env = "VADSEG_ECHO_REF", value_name = "FIFO")]
    pub echo_ref: Option<std::path::PathBuf>,
    /// How far below the played level (dB) input must be to count as echo. Lower catches louder
    /// echo but also ignores a caller quieter than the loudspeaker.
    #[arg(long, default_value_t = 6.0, env = "VADSEG_ECHO_MARGIN_DB", value_name = "DB")]
    pub echo_margin: f64,
    /// Barge-in cue: send speech-onset (tts-writer pauses the reply) as soon as a 10 ms block of
    /// input gets loud, before Silero has heard a whole chunk of it: ~20 ms instead of 30–190 ms
    /// (the "s" of "Stop." is slow for Silero). Costs a pause of up to 240 ms, then a resume,
    /// for a loud non-speech sound (a knock, a cough). "off": onsets come from Silero alone.
    #[arg(long, default_value = "on", env = "VADSEG_LEVEL_ONSET", value_parser = ["on", "off"])]
    pub level_onset: String,
    /// The level cue: how loud a block must be (dBFS) …
    #[arg(long, default_value_t = -45.0, env = "VADSEG_ONSET_LEVEL_DB", value_name = "DBFS", allow_negative_numbers = true)]
    pub onset_level: f64,
    /// … and how far above the background (the quietest 10 ms of the last 2 s, in dB). Lower
    /// reacts to softer starts, higher pauses less often for noise.
    #[arg(long, default_value_t = 12.0, env = "VADSEG_ONSET_ABOVE_FLOOR_DB", value_name = "DB")]
    pub onset_above_floor: f64,
    #[command(flatten)]
    pub log: LogArgs,
}

/// What the caller's audio came through (`--line`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// 16 kHz or more: Telegram, a microphone, a file.
    Wide,
    /// 8 kHz μ-law from the phone network (phone-bridge's lines).
    Phone,
}

impl Line {
    /// Silero's speech threshold for this line. On a phone line, after seconds of its noise
    /// floor, some short words score 0.2–0.5 where the same words on a wide line score
    /// 0.7–1.0 (README "Phone lines").
    pub fn threshold(self) -> f32 {
        match self {
            Line::Wide => 0.5,
            Line::Phone => 0.35,
        }
    }

    /// The minimum speech (ms) for this line: on a phone line Silero's voiced run of a short
    /// word shrinks (issue 24: "Stop." voiced ~64–128 ms), so the guard is one chunk shorter.
    pub fn min_speech_ms(self) -> u32 {
        match self {
            Line::Wide => 128,
            Line::Phone => 96,
        }
    }
}

fn parse_probability(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 1".into())
    }
}

impl Args {
    /// The checks a value must pass beyond its type (range and order), exiting as
    /// fifo-layout.md §4 says.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(1.0..=600.0).contains(&self.max_segment) || self.eot_silence == 0 {
            return Err(cli::bad_value::<Args>(&["--max-segment", "--eot-silence"], "--max-segment must be 1–600 s and --eot-silence above 0"));
        }
        if !(self.turn_check <= self.eot_complete && self.eot_complete <= self.eot_incomplete) || self.turn_check == 0 {
            return Err(cli::bad_value::<Args>(
                &["--turn-check", "--eot-complete", "--eot-incomplete"],
                "need 0 < --turn-check ≤ --eot-complete ≤ --eot-incomplete",
            ));
        }
        Ok(())
    }

    /// The segmenter's settings; `turn_model`: a turn model was loaded.
    pub fn segmenter_config(&self, turn_model: bool) -> SegmenterConfig {
        SegmenterConfig {
            threshold: self.threshold.unwrap_or(self.line.threshold()),
            min_speech_ms: self.min_speech.unwrap_or(self.line.min_speech_ms()),
            eot_silence_ms: self.eot_silence,
            pre_roll_ms: self.pre_roll,
            post_roll_ms: self.post_roll,
            max_segment_ms: (self.max_segment * 1000.0) as u32,
            turn_model: turn_model.then_some(TurnModelConfig {
                check_ms: self.turn_check,
                threshold: self.turn_threshold,
                complete_ms: self.eot_complete,
                incomplete_ms: self.eot_incomplete,
            }),
        }
    }

    /// The longest the stage waits for the turn model's answer (see `VadStage::new`).
    pub fn answer_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis((self.eot_incomplete - self.eot_complete).max(100) as u64)
    }

    /// The level cue's settings, or None with `--level-onset off`.
    pub fn level_onset(&self) -> anyhow::Result<Option<OnsetConfig>> {
        if self.level_onset != "on" {
            return Ok(None);
        }
        if !(-90.0..=0.0).contains(&self.onset_level) || !(0.0..=60.0).contains(&self.onset_above_floor) {
            return Err(cli::bad_value::<Args>(
                &["--onset-level", "--onset-above-floor"],
                "--onset-level must be −90–0 dBFS and --onset-above-floor 0–60 dB",
            ));
        }
        Ok(Some(OnsetConfig::from_db(self.onset_level, self.onset_above_floor)))
    }

    /// The turn model file `--turn-model` names, or None for silence alone: "off", or "auto"
    /// with the provisioned file absent (one log line says so). A named file that is missing
    /// is an error.
    pub fn turn_model_path(&self) -> anyhow::Result<Option<PathBuf>> {
        let silence_only = format!("ending turns on silence alone (--eot-silence {} ms)", self.eot_silence);
        let path = match self.turn_model.as_str() {
            "off" | "" => {
                log::debug!("turn model off; {silence_only}");
                return Ok(None);
            }
            "auto" => {
                let p = crate::turn_model::default_model_path();
                if !p.exists() {
                    log::info!("turn model {} not found (scripts/setup installs it); {silence_only}", p.display());
                    return Ok(None);
                }
                p
            }
            p => PathBuf::from(p),
        };
        if !path.is_file() {
            return Err(cli::fail(cli::exit::CONFIG, format!("turn model {} not found; run scripts/setup, or --turn-model off", path.display())));
        }
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> SegmenterConfig {
        let argv = std::iter::once("vadseg").chain(args.iter().copied());
        Args::try_parse_from(argv).unwrap().segmenter_config(false)
    }

    #[test]
    fn a_phone_line_lowers_the_threshold_and_the_minimum_speech_and_explicit_values_win() {
        let wide = settings(&[]);
        assert_eq!((wide.threshold, wide.min_speech_ms), (0.5, 128));
        let phone = settings(&["--line", "phone"]);
        assert_eq!((phone.threshold, phone.min_speech_ms), (0.35, 96));
        let set = settings(&["--line", "phone", "--threshold", "0.6", "--min-speech", "160"]);
        assert_eq!((set.threshold, set.min_speech_ms), (0.6, 160));
        assert!(Args::try_parse_from(["vadseg", "--line", "pots"]).is_err());
    }
}
