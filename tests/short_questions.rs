//! Short questions, live (issue 17): a subset of the short-question set (every third
//! question, in all three voices) through the real `tgcat --realtime | vadseg | sttd` chain,
//! with speculative decoding at pauses as in a call. Most must be heard exactly (normalised:
//! case, punctuation, digits; see MIN_EXACT), no transcript may hold a repetition loop, and
//! every speculative result must be the one a final decode gives (same chain, speculation
//! off). The whole set and the decoding settings are in `cargo bench -p sttd --bench
//! short_questions`. Needs tgcat, vadseg and tts-writer built and ORT_DYLIB_PATH (scripts/env.sh).

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;
use tgvoice::event::kind;

/// Heard exactly through the live chain, at least. Issue 17 asks for 90 %; tiny.en does not
/// get there on espeak-ng's voices with any decoding setting measured (74-79 % on the whole
/// set, Piper alone 86-92 %: README "Short questions"), so this is the regression bound, set
/// under the measured rate, not the target.
const MIN_EXACT: f64 = 0.70;

/// `tgcat [--realtime] WAV | vadseg | sttd ARGS`: final transcripts in order, and sttd's log.
fn chain(wav: &Path, realtime: bool, sttd_args: &[&str]) -> (Vec<String>, String) {
    let mut tgcat = vec!["-q", "--trailing-silence", "1.5"];
    if realtime {
        tgcat.push("--realtime");
    }
    let chain = run_chain(wav, &tgcat, &["-q"], sttd_args, Duration::from_secs(300));
    let heard = chain
        .events
        .into_iter()
        .filter(|e| e.is(kind::TRANSCRIPT) && e.get_bool("final") != Some(false))
        .map(|e| e.text.unwrap_or_default())
        .collect();
    (heard, chain.sttd_log)
}

#[test]
// Ignored for a while because two runs of the same build gave 92 % and 69 %. Causes (README
// "Why two runs of the live test disagreed"): sttd decoded every turn on one whisper.cpp
// state, and a state that had served other calls (aborted speculative decodes, which happen
// more on an idle machine) could decode the same turn to other text; now each turn gets a
// fresh state (checked by `a_decode_depends_only_on_its_input_not_on_the_calls_before_it`).
// And Piper sampled every question anew, so each run measured other audio; now it speaks
// with its noise off.
fn short_questions_live_are_heard_exactly_and_speculation_changes_nothing() {
    let questions: Vec<&str> = short_questions().into_iter().step_by(3).collect();
    let gap = vec![0i16; RATE as usize * 3 / 2];
    let mut audio = gap.clone();
    let mut expected = vec![];
    for (_, voice) in VOICES {
        for q in &questions {
            audio.extend(voice.speak(q));
            audio.extend_from_slice(&gap);
            expected.push(*q);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("questions.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, &audio).unwrap();

    let (live, log) = chain(&wav, true, &[]);
    let speculative = log.lines().filter(|l| l.contains(", speculative")).count();
    println!("{speculative} of {} transcripts were speculative", live.len());
    assert_eq!(live.len(), expected.len(), "one final transcript per question:\n{log}");
    let mut exact = 0;
    for (want, got) in expected.iter().zip(&live) {
        let ok = exact_match(want, got);
        exact += ok as usize;
        println!("{} {want:?} → {got:?}", if ok { "ok  " } else { "MISS" });
        assert!(sttd::guard::cut_loop(got).is_none(), "a repetition loop reached the output: {got:?}");
    }
    let rate = exact as f64 / expected.len() as f64;
    println!("heard exactly: {exact}/{} ({:.0} %)", expected.len(), rate * 100.0);
    assert!(rate >= MIN_EXACT, "only {exact}/{} heard exactly (need {:.0} %)", expected.len(), MIN_EXACT * 100.0);
    // The same chain with speculation off decodes every turn at speech-end: a speculative
    // result must be exactly what that final decode gives. (With these synthetic voices
    // vadseg's held-back post-roll usually still holds the end of the last word, so the
    // speculative decode rarely had the final input and is rarely reused: then there is
    // nothing to compare.) With speculation off nothing depends on the pace (vadseg's turns
    // are cut by the audio's own clock, and sttd decodes each whole turn), so that chain runs
    // at full speed.
    if speculative > 0 {
        let (finals, _) = chain(&wav, false, &["--speculate-after", "0"]);
        assert_eq!(live, finals, "speculative results differ from final decodes");
    }
}

/// Speculation reuses a decode made earlier, between other calls on the same whisper state, as
/// the final result; that is only right if a decode depends on nothing but its input. Decode
/// the same turns fresh, then again in reverse order with a full-window call, a fitted call on
/// other audio and an aborted call in between: the texts must be identical.
#[test]
fn a_decode_depends_only_on_its_input_not_on_the_calls_before_it() {
    use clap::Parser;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // Before each turn got a fresh whisper state, "Translate hello into Spanish." came out
    // differently after other calls here, in both voices.
    let questions: Vec<&str> = short_questions().into_iter().step_by(9).collect();
    let mut turns: Vec<Vec<f32>> = vec![];
    for (_, voice) in VOICES.iter().skip(1) {
        let gap = vec![0i16; RATE as usize * 3 / 2];
        let mut audio = gap.clone();
        for q in &questions {
            audio.extend(voice.speak(q));
            audio.extend_from_slice(&gap);
        }
        turns.extend(vad_segments(&audio).into_iter().map(|s| s.iter().map(|x| *x as f32 / 32768.0).collect::<Vec<f32>>()));
    }
    let model = model_path();
    let args = sttd::config::Args::try_parse_from(["sttd", "--model", model.to_str().unwrap()]).unwrap();
    let load = || sttd::engine::WhisperEngine::load(&model, args.decode_settings().unwrap()).unwrap();
    let mut engine = load();
    let first: Vec<String> = turns.iter().map(|t| engine.transcribe(t, None).unwrap().text).collect();
    let mut again = vec![String::new(); turns.len()];
    for (i, t) in turns.iter().enumerate().rev() {
        // Other work in between, as in a call: an aborted speculative decode of a longer input...
        let abort = Arc::new(AtomicBool::new(false));
        let setter = {
            let abort = abort.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                abort.store(true, Ordering::Relaxed);
            })
        };
        let longer: Vec<f32> = t.iter().chain(turns[(i + 1) % turns.len()].iter()).copied().collect();
        engine.transcribe(&longer, Some(abort)).unwrap();
        setter.join().unwrap();
        // ...and a decode of other audio (another window size).
        engine.transcribe(&turns[(i + 2) % turns.len()], None).unwrap();
        again[i] = engine.transcribe(t, None).unwrap().text;
    }
    let mut fresh = load();
    let fresh_texts: Vec<String> = turns.iter().map(|t| fresh.transcribe(t, None).unwrap().text).collect();
    for i in 0..turns.len() {
        println!("{:?} | {:?} | {:?}", first[i], again[i], fresh_texts[i]);
    }
    assert_eq!(first, again, "the same input decoded after other calls gave another text");
    assert_eq!(first, fresh_texts, "a fresh model state gave another text");
}
