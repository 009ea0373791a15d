//! Short questions (issue 17): the question set of tests/data/short_questions.txt in three
//! voices (Piper en_US-joe-medium through tts-writer, espeak-ng en-us at 165 wpm and en-gb at
//! 140 wpm), cut by the real vadseg (`tgcat | vadseg` at full speed), then decoded by sttd's
//! own decoder (the library: decode input, passes, re-decode, loop cut, hallucination guard)
//! with each decoding setting. Prints one row per setting: normalised exact match, WER,
//! repetition loops left, re-decodes, and decode time per turn (median, p90), with the load.
//!
//! Run: `cargo build --release -p tgcat -p vadseg -p tts-writer && cargo bench -p sttd --bench short_questions`
//! `STTD_BENCH_SETTINGS=2,5` runs only those rows (1-based); `STTD_BENCH_SHOW=1` prints every miss;
//! `STTD_BENCH_MODEL=~/.cache/tgvoice/models/ggml-base.bin` measures another model (default tiny.en);
//! `STTD_BENCH_STEP=3` uses every third question only (the live test's subset; a quicker run).

// The question set's voices and vadseg's segments are the system tests' helpers (tests/common),
// over sttd's own (bins/sttd/tests/common).
#[path = "../../../tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::*;
use sttd::config::Args;
use sttd::engine::WhisperEngine;
use sttd::guard::{cut_loop, HallucinationGuard};

/// (name, sttd flags) per row.
const SETTINGS: &[(&str, &[&str])] = &[
    ("greedy, audio_ctx fit (old default)", &["--audio-ctx", "fit", "--redecode-beam-size", "0"]),
    ("greedy, full window", &["--audio-ctx", "full", "--redecode-beam-size", "0"]),
    ("beam 5, audio_ctx fit", &["--beam-size", "5", "--audio-ctx", "fit", "--redecode-beam-size", "0"]),
    ("beam 5, full window", &["--beam-size", "5", "--audio-ctx", "full", "--redecode-beam-size", "0"]),
    ("greedy, fit margin 256", &["--audio-ctx", "fit", "--audio-ctx-margin", "256", "--redecode-beam-size", "0"]),
    ("greedy, fit + temperature fallback", &["--audio-ctx", "fit", "--temperature-fallback", "--redecode-beam-size", "0"]),
    ("greedy fit, re-decode beam 5 full", &["--audio-ctx", "fit", "--redecode-beam-size", "5", "--redecode-audio-ctx", "full"]),
    ("greedy full, re-decode beam 5 full", &["--audio-ctx", "full", "--redecode-beam-size", "5", "--redecode-audio-ctx", "full"]),
    ("beam 5 full + prompt", &["--beam-size", "5", "--audio-ctx", "full", "--redecode-beam-size", "0", "--prompt", "Questions to a voice assistant."]),
];

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((p / 100.0 * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn main() {
    let step = std::env::var("STTD_BENCH_STEP").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let questions: Vec<&str> = short_questions().into_iter().step_by(step).collect();
    let mut set: Vec<(String, &str, Vec<f32>)> = vec![]; // (voice, expected, segment)
    for (name, voice) in VOICES {
        let gap = vec![0i16; RATE as usize * 3 / 2];
        let mut audio = gap.clone();
        for q in &questions {
            audio.extend(voice.speak(q));
            audio.extend_from_slice(&gap);
        }
        let segments = vad_segments(&audio);
        assert_eq!(segments.len(), questions.len(), "{name}: vadseg cut {} segments for {} questions", segments.len(), questions.len());
        for (q, seg) in questions.iter().zip(segments) {
            set.push((name.to_string(), q, seg.iter().map(|s| *s as f32 / 32768.0).collect()));
        }
    }
    let model = std::env::var_os("STTD_BENCH_MODEL").map(std::path::PathBuf::from).unwrap_or_else(model_path);
    let only: Option<Vec<usize>> = std::env::var("STTD_BENCH_SETTINGS").ok().map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let show = std::env::var_os("STTD_BENCH_SHOW").is_some();
    println!("{} utterances ({} questions × {} voices), model {}; load at start {}", set.len(), questions.len(), VOICES.len(), model.display(), load());
    let mut rows = vec![];
    for (i, (name, flags)) in SETTINGS.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&(i + 1))) {
            continue;
        }
        let argv = std::iter::once("sttd".to_string())
            .chain(flags.iter().map(|f| f.to_string()))
            .chain(["--model".into(), model.display().to_string()]);
        let args = Args::try_parse_from(argv).expect("bench flags");
        let mut engine = WhisperEngine::load(&args.model(), args.decode_settings().unwrap()).expect("load the model");
        engine.transcribe(&vec![0.0; 16_000], None).unwrap();
        let guard = HallucinationGuard::new(args.guard_settings());
        let (mut exact, mut errors, mut words, mut loops, mut redecoded) = (0, 0, 0, 0, 0);
        let mut ms = vec![];
        let mut per_voice = vec![(0, 0); VOICES.len()];
        for (voice, expected, seg) in &set {
            let t = engine.transcribe(seg, None).unwrap();
            let text = guard.accept(&t, seg).unwrap_or_default();
            ms.push(t.elapsed_ms);
            redecoded += t.redecoded.is_some() as usize;
            loops += cut_loop(&text).is_some() as usize;
            let ok = exact_match(expected, &text);
            exact += ok as usize;
            let v = VOICES.iter().position(|(n, _)| n == voice).unwrap();
            per_voice[v].0 += ok as usize;
            per_voice[v].1 += 1;
            let (e, n) = word_errors(expected, &text);
            errors += e;
            words += n;
            if show && !ok {
                println!("  {voice}: {expected:?} → {text:?} (logprob {:.2}{})", t.avg_logprob, t.redecoded.as_ref().map(|p| format!(", re-decoded: {p}")).unwrap_or_default());
            }
        }
        let n = set.len();
        let voices: Vec<String> = per_voice.iter().map(|(a, b)| format!("{a}/{b}")).collect();
        let row = format!(
            "| {name} | {exact}/{n} ({:.0} %) | {} | {:.1} % | {loops} | {redecoded} | {:.0} | {:.0} |",
            exact as f64 / n as f64 * 100.0,
            voices.join(" · "),
            errors as f64 / words as f64 * 100.0,
            pct(&mut ms, 50.0),
            pct(&mut ms, 90.0),
        );
        println!("{row}   (load {})", load());
        rows.push(row);
    }
    println!("\n| setting | exact match | per voice ({}) | WER | loops | re-decoded | ms median | ms p90 |", VOICES.map(|v| v.0).join(" · "));
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!("load average at the end: {}", load());
}
