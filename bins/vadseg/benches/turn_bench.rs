//! End of turn by meaning vs silence alone: the same Piper-voiced calls played in real time
//! (`tgcat --realtime | vadseg`) with the Smart Turn model on and off.
//!
//! * Complete questions (10): the silence each waited before its turn ended (from its last
//!   audible sample to the audio that decided the end, speech-end's `vad_audio_until`), per
//!   question, median and p90.
//! * Requests with a 600–900 ms hesitation mid-sentence (10 filled with "um", 10 silent): how
//!   many stayed one turn.
//! * The model's inference time (vadseg's closing log line).
//!
//! Run: `cargo build --release -p tgcat -p vadseg -p tts-writer && cargo bench -p vadseg --bench turn_bench`
//! (~7 min: six calls of ~60 s in real time).

#[path = "../tests/common/mod.rs"]
mod common;

use common::turns::*;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let questions = question_call(dir.path());
    let filled = hesitation_call(dir.path(), Hesitation::Filled);
    let silent = hesitation_call(dir.path(), Hesitation::Silent);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    for (label, args) in [("model on (the default)", MODEL_ON.to_vec()), ("model off (--turn-model off)", vec!["--turn-model", "off"])] {
        let (out, log) = run_call_realtime(dir.path(), "questions", &questions.samples, &args);
        let results = turn_results(&questions, &out);
        println!("\n== complete questions, {label}");
        println!("  (silence the decision saw / speech-end sent after the last audible sample, wall clock)");
        for r in &results {
            let s = match (r.eot_silence_ms, r.eot_after_ms) {
                (Some(s), Some(a)) => format!("{s:5.0} ms / {a:5.0} ms"),
                _ => "split".into(),
            };
            let p = r.p_complete.first().copied().flatten().map(|p| format!("{p:.2}")).unwrap_or("-".into());
            println!("  {s}  {:<11} p={p:<5} {}", r.reasons.join(","), r.text);
        }
        let silences: Vec<f64> = results.iter().filter_map(|r| r.eot_silence_ms).collect();
        let sent: Vec<f64> = results.iter().filter_map(|r| r.eot_after_ms).collect();
        if !silences.is_empty() {
            println!(
                "  eot silence: median {:.0} ms, p90 {:.0} ms; sent after: median {:.0} ms, p90 {:.0} ms ({} of {} one turn)",
                percentile(&silences, 50.0),
                percentile(&silences, 90.0),
                percentile(&sent, 50.0),
                percentile(&sent, 90.0),
                silences.len(),
                results.len()
            );
        }
        if let Some((n, mean, max)) = inference_stats(&log) {
            println!("  turn model: {n} answers, inference {mean:.0} ms mean, {max:.0} ms max");
        }
        for (kind, call) in [(Hesitation::Filled, &filled), (Hesitation::Silent, &silent)] {
            let (out, log) = run_call_realtime(dir.path(), "hesitations", &call.samples, &args);
            let results = turn_results(call, &out);
            println!("== requests with a {kind:?} hesitation, {label}");
            for (i, r) in results.iter().enumerate() {
                let p: Vec<String> = r.p_complete.iter().map(|p| p.map(|p| format!("{p:.2}")).unwrap_or("-".into())).collect();
                println!("  {} turn(s)  {:>3} ms  {:<22} p={:<10} {}", r.segments, hesitation_ms(i), r.reasons.join(","), p.join(","), r.text);
            }
            println!("  kept whole: {} of {}", results.iter().filter(|r| r.segments == 1).count(), results.len());
            if let Some((n, mean, max)) = inference_stats(&log) {
                println!("  turn model: {n} answers, inference {mean:.0} ms mean, {max:.0} ms max");
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload average at end: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}
