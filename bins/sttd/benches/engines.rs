//! The engine table (issue 24): Whisper tiny.en and Moonshine Base side by side, each through
//! sttd's own decoder (the library: decode input, the engine, loop cut, hallucination guard),
//! on the corpus of `scripts/corpus` — the short-question set in four voices and human read
//! speech, each clean and in six sox variants (phone line, noise, tempo, pitch) — plus the
//! long-sentence chain (`tgcat | vadseg | sttd --engine E` at full speed on tests/chain_wer.rs's
//! 12 Piper-voiced sentences) and the decode time of a 2 s and a 5 s turn.
//!
//! Run through `scripts/bench-stt` (it makes the corpus first). Settings:
//! `STTD_CORPUS=DIR` the corpus folder (else `scripts/corpus` is run);
//! `STTD_BENCH_ENGINES=whisper,moonshine`; `STTD_BENCH_STEP=3` every third question only;
//! `STTD_BENCH_SHOW=1` prints every miss; `STTD_BENCH_TIMING_RUNS=20` decodes per timed turn;
//! `STTD_BENCH_TIMING_ONLY=1` only the decode times (no corpus, no chain);
//! `STTD_BENCH_QUIET_LOAD=1.0` the 1-min load average under which timing starts (the
//! machine is shared: it waits up to `STTD_BENCH_QUIET_WAIT=300` s for it, reports the load
//! with each figure, and leaves a figure out when the load never dropped, unless
//! `STTD_BENCH_TIME_BUSY=1`).

#[path = "../../../tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sttd::config::Args;
use sttd::guard::HallucinationGuard;
use sttd::worker::Transcriber;
use tgvoice::event::kind;

const VARIANTS: [&str; 7] = ["clean", "phone", "noise15", "tempo90", "tempo110", "pitch-2", "pitch+2"];

struct Clip {
    set: String,
    voice: String,
    variant: String,
    path: PathBuf,
    text: String,
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN)
}

fn load3() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((p / 100.0 * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STTD_CORPUS") {
        return dir.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(root.join("scripts/corpus")).output().expect("run scripts/corpus");
    assert!(out.status.success(), "scripts/corpus failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().expect("scripts/corpus prints its folder").trim())
}

fn read_clips(dir: &Path, step: usize) -> Vec<Clip> {
    let tsv = std::fs::read_to_string(dir.join("clips.tsv")).expect("clips.tsv");
    tsv.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let clip = Clip { set: f[0].into(), voice: f[1].into(), variant: f[2].into(), path: dir.join(f[3]), text: f[4].into() };
            // Question ids are q01, q02, …: keep every `step`th.
            let n: usize = Path::new(f[3]).file_name()?.to_str()?.strip_prefix('q').and_then(|s| s.get(..2)?.parse().ok()).unwrap_or(1);
            (clip.set != "questions" || (n - 1).is_multiple_of(step)).then_some(clip)
        })
        .collect()
}

fn wav_f32(path: &Path) -> Vec<f32> {
    let (rate, samples) = tgvoice::resample::read_wav_mono(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    assert_eq!(rate, RATE, "{}", path.display());
    samples.iter().map(|s| *s as f32 / 32768.0).collect()
}

/// What sttd would send for `samples` as one turn: the guard's audio check, the engine, the
/// guard's verdict on the text (empty when rejected).
fn hear(engine: &mut dyn Transcriber, guard: &HallucinationGuard, samples: &[f32]) -> (String, f64) {
    if guard.check_audio(samples).is_err() {
        return (String::new(), 0.0);
    }
    let t = engine.transcribe(samples, None).expect("transcribe");
    (guard.accept(&t, samples).unwrap_or_default(), t.elapsed_ms)
}

#[derive(Default, Clone, Copy)]
struct Tally {
    exact: usize,
    n: usize,
    errors: usize,
    words: usize,
}

impl Tally {
    fn add(&mut self, reference: &str, text: &str) {
        self.exact += exact_match(reference, text) as usize;
        self.n += 1;
        let (e, w) = word_errors(reference, text);
        self.errors += e;
        self.words += w;
    }
    fn exact_pct(&self) -> f64 {
        self.exact as f64 * 100.0 / self.n.max(1) as f64
    }
    fn wer(&self) -> f64 {
        self.errors as f64 * 100.0 / self.words.max(1) as f64
    }
}

/// Wait (up to `STTD_BENCH_QUIET_WAIT` s) for the 1-min load average to drop under the bound;
/// returns whether it did.
fn wait_for_quiet() -> bool {
    let bound = env_or("STTD_BENCH_QUIET_LOAD", 1.0);
    let deadline = Instant::now() + Duration::from_secs(env_or("STTD_BENCH_QUIET_WAIT", 300));
    loop {
        if load1() < bound {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_secs(10));
    }
}

fn chain_wer(engine: &str) -> (f64, usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let (wav, _) = long_sentence_recording(dir.path());
    let chain = run_chain(&wav, &[], &[], &["--engine", engine], Duration::from_secs(180));
    let texts: Vec<String> = chain
        .events
        .into_iter()
        .filter(|e| e.kind == kind::TRANSCRIPT && e.get_bool("final") == Some(true))
        .filter_map(|e| e.text.filter(|t| !t.is_empty()))
        .collect();
    let (errors, words) = word_errors(&UTTERANCES.join(" "), &texts.join(" "));
    (errors as f64 * 100.0 / words as f64, texts.len(), texts.join(" | "))
}

fn main() {
    // Only the decode times (no corpus, no chain): for a second try when the machine is quiet.
    let timing_only = std::env::var_os("STTD_BENCH_TIMING_ONLY").is_some();
    let dir = if timing_only { PathBuf::from("(none: STTD_BENCH_TIMING_ONLY)") } else { corpus_dir() };
    let step = env_or("STTD_BENCH_STEP", 1usize).max(1);
    let clips = if timing_only { vec![] } else { read_clips(&dir, step) };
    let engines: Vec<String> = std::env::var("STTD_BENCH_ENGINES").unwrap_or("whisper,moonshine".into()).split(',').map(String::from).collect();
    let show = std::env::var_os("STTD_BENCH_SHOW").is_some();
    let runs = env_or("STTD_BENCH_TIMING_RUNS", 20usize).max(2);
    println!("corpus {} ({} clips, every {step}. question); load at start {}", dir.display(), clips.len(), load3());
    // The timed turns: a short question and a long sentence in the Piper voice, as vadseg
    // would cut them (pre-roll and post-roll).
    let short_turn: Vec<f32> = with_rolls(&speak_piper("What is the capital of France?")).iter().map(|s| *s as f32 / 32768.0).collect();
    let long_turn: Vec<f32> =
        with_rolls(&speak_piper("Please call me back when you get home tonight, and bring the blue folder from the office."))
            .iter()
            .map(|s| *s as f32 / 32768.0)
            .collect();
    let mut summary = vec![];
    for name in &engines {
        let args = Args::try_parse_from(["sttd", "--engine", name]).expect("engine name");
        let (mut engine, _) = args.load_engine().expect("load the engine");
        engine.warm_up().unwrap();
        let guard = HallucinationGuard::new(args.guard_settings());
        println!("\n## {name}: {}", engine.describe());
        // (set, voice) → variant → tally
        let mut table: BTreeMap<(String, String), BTreeMap<String, Tally>> = BTreeMap::new();
        let mut by_variant: BTreeMap<(String, String), Tally> = BTreeMap::new();
        let t0 = Instant::now();
        for c in &clips {
            let samples = wav_f32(&c.path);
            let (text, _) = hear(engine.as_mut(), &guard, &samples);
            table.entry((c.set.clone(), c.voice.clone())).or_default().entry(c.variant.clone()).or_default().add(&c.text, &text);
            by_variant.entry((c.set.clone(), c.variant.clone())).or_default().add(&c.text, &text);
            if show && !exact_match(&c.text, &text) {
                println!("  {} {} {}: {:?} → {text:?}", c.set, c.voice, c.variant, c.text);
            }
        }
        let mut accuracy = String::new();
        if !timing_only {
            println!("{} clips in {:.0} s (load {})", clips.len(), t0.elapsed().as_secs_f64(), load3());
            println!("\n| {name} | {} | all |", VARIANTS.join(" | "));
            println!("|---{}|---|", "|---".repeat(VARIANTS.len()));
            for ((set, voice), variants) in &table {
                let cells: Vec<String> = VARIANTS
                    .iter()
                    .map(|v| variants.get(*v).map_or("-".into(), |t| if set == "questions" { format!("{}/{}", t.exact, t.n) } else { format!("WER {:.1} %", t.wer()) }))
                    .collect();
                let mut all = Tally::default();
                for t in variants.values() {
                    (all.exact, all.n, all.errors, all.words) = (all.exact + t.exact, all.n + t.n, all.errors + t.errors, all.words + t.words);
                }
                let total = if set == "questions" { format!("{:.0} % exact, WER {:.1} %", all.exact_pct(), all.wer()) } else { format!("WER {:.1} %", all.wer()) };
                println!("| {set} {voice} | {} | {total} |", cells.join(" | "));
            }
            for set in ["questions", "human"] {
                let cells: Vec<String> = VARIANTS
                    .iter()
                    .map(|v| by_variant.get(&(set.to_string(), v.to_string())).map_or("-".into(), |t| format!("{:.0} % / {:.1} %", t.exact_pct(), t.wer())))
                    .collect();
                println!("| {set}, all voices (exact / WER) | {} | |", cells.join(" | "));
            }
            let mut q = Tally::default();
            let mut h = Tally::default();
            for ((set, _), t) in &by_variant {
                let x = if set == "questions" { &mut q } else { &mut h };
                (x.exact, x.n, x.errors, x.words) = (x.exact + t.exact, x.n + t.n, x.errors + t.errors, x.words + t.words);
            }
            let (chain, turns, texts) = chain_wer(name);
            println!("long-sentence chain (tgcat | vadseg | sttd --engine {name}, full speed): WER {chain:.1} %, {turns}/12 transcripts");
            if show {
                println!("  {texts}");
            }
            accuracy = format!(
                "questions {}/{} exact ({:.1} %), WER {:.1} %; human WER {:.1} %; chain WER {chain:.1} % ({turns}/12); ",
                q.exact,
                q.n,
                q.exact_pct(),
                q.wer(),
                h.wer()
            );
        }
        let mut timing = vec![];
        for (label, turn) in [("2 s", &short_turn), ("5 s", &long_turn)] {
            let quiet = wait_for_quiet();
            let before = load3();
            if !quiet && std::env::var_os("STTD_BENCH_TIME_BUSY").is_none() {
                let figure = format!("{label} turn: not measured (load {before}: never under {})", env_or("STTD_BENCH_QUIET_LOAD", 1.0));
                println!("{figure}");
                timing.push(figure);
                continue;
            }
            let mut ms = vec![];
            for _ in 0..runs {
                ms.push(engine.transcribe(turn, None).unwrap().elapsed_ms);
            }
            let secs = turn.len() as f64 / RATE as f64;
            let figure = format!(
                "{label} turn ({secs:.2} s with the rolls): median {:.0} ms, p90 {:.0} ms over {runs} decodes; load {before} → {}{}",
                pct(&ms, 50.0),
                pct(&ms, 90.0),
                load3(),
                if quiet { "" } else { " (never quiet: figure taken anyway)" }
            );
            println!("{figure}");
            timing.push(figure);
        }
        summary.push(format!("{name}: {accuracy}{}", timing.join("; ")));
    }
    println!("\n# summary");
    for s in summary {
        println!("{s}");
    }
    println!("load at the end: {}", load3());
}
