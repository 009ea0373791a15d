//! Time to first audio and synthesis real-time factor per engine.
//!
//! * in-process: engine loaded once, then for a short sentence the time from `synthesize` to
//!   the first 48 kHz audio (median of N, after one warm-up), and the RTF over a ~10 s
//!   paragraph (synthesis time / audio duration);
//! * end to end: the built `tts-writer` binary, already running, from writing a text line on
//!   its stdin to the first byte on its stdout (median of N).
//!
//! * over the wire: `--engine openai` and `--engine wyoming` in-process against the loopback
//!   stand-ins of the tests, each answering after a fixed delay (0 and 200 ms) with 2 s of
//!   audio: what the protocol and the streaming cost on top of the server's own thinking;
//!
//! Run: `cargo bench -p tts-writer` (after `cargo build --release -p tts-writer` and
//! scripts/setup). Targets on the reference machine: piper < 250 ms, espeak-ng < 50 ms.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::resample::StreamResampler;
use tts_writer::engine::{self, Audio, EngineConfig, EngineKind};

#[allow(dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;
use common::standin_tts::{tone, wyoming_piper, Act, Speech, Wyoming, WYOMING_RATE};

const SHORT: &str = "Hello, how can I help you today?";
const PARAGRAPH: &str = "The weather today is mild, with a light breeze from the west. In the \
afternoon some clouds may gather, but rain is unlikely before the evening. Tomorrow will be \
warmer, so it is a good day for a walk in the park.";
const N: usize = 10;
const N_E2E: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn config(kind: EngineKind, whole_sentences: bool) -> EngineConfig {
    EngineConfig {
        kind,
        piper_model: engine::default_piper_model(),
        piper_threads: 1,
        piper_whole_sentences: whole_sentences,
        espeak_voice: "en-us".into(),
        espeak_speed: 175,
        command: None,
        command_arg: false,
        command_raw_rate: None,
        server: Default::default(),
    }
}

/// ms from the call to the first 48 kHz samples.
fn first_audio_ms(e: &mut dyn engine::SpeechEngine, text: &str) -> f64 {
    let t = Instant::now();
    let mut first = None;
    e.synthesize(text, &mut |a: Audio| {
        // (an engine waiting on a server asks with no samples whether to go on)
        if first.is_none() && !a.samples.is_empty() {
            let mut r = StreamResampler::new(a.rate, 48_000, (a.rate / 50) as usize).unwrap();
            let _ = r.process(&a.samples);
            first = Some(t.elapsed().as_secs_f64() * 1000.0);
        }
        true
    })
    .unwrap();
    first.expect("the engine produced audio")
}

fn rtf(e: &mut dyn engine::SpeechEngine, text: &str) -> (f64, f64) {
    let t = Instant::now();
    let mut secs = 0.0;
    e.synthesize(text, &mut |a: Audio| {
        if !a.samples.is_empty() {
            secs += a.samples.len() as f64 / a.rate as f64;
        }
        true
    })
    .unwrap();
    (t.elapsed().as_secs_f64() / secs, secs)
}

fn in_process(name: &str, kind: EngineKind, whole_sentences: bool) -> Option<f64> {
    let t = Instant::now();
    let mut e = match engine::select(&config(kind, whole_sentences)) {
        Ok(e) => e,
        Err(err) => {
            println!("{name}: unavailable ({err:#}); run scripts/setup");
            return None;
        }
    };
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    first_audio_ms(e.as_mut(), SHORT); // warm-up
    let times: Vec<f64> = (0..N).map(|_| first_audio_ms(e.as_mut(), SHORT)).collect();
    let med = median(times.clone());
    let (rtf, secs) = rtf(e.as_mut(), PARAGRAPH);
    println!(
        "{name:<10} in-process: load {load_ms:.0} ms, time to first audio median {med:.1} ms (min {:.1}, max {:.1}, n={N}), RTF {rtf:.3} over {secs:.1} s",
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max)
    );
    Some(med)
}

fn end_to_end(name: &str, engine: &str) -> Option<f64> {
    let bin = std::env::current_exe().ok()?.parent()?.parent()?.join("tts-writer");
    if !bin.exists() {
        println!("{name}: {} not built; run `cargo build --release -p tts-writer`", bin.display());
        return None;
    }
    let state = std::env::temp_dir().join(format!("tts-writer-bench-{}", std::process::id()));
    let mut child = Command::new(&bin)
        .args(["--engine", engine, "--state-dir"])
        .arg(&state)
        .env("TGVOICE_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let mut stdout = child.stdout.take()?;
    let mut stderr = BufReader::new(child.stderr.take()?);
    // Ready once it logs the engine it speaks with (the model is loaded by then).
    let mut line = String::new();
    while stderr.read_line(&mut line).ok()? > 0 && !line.contains("speaking with") {
        line.clear();
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        let mut idle_since = Instant::now();
        let mut in_reply = false;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if !in_reply || idle_since.elapsed() > Duration::from_millis(150) {
                        let _ = tx.send(Instant::now());
                    }
                    in_reply = true;
                    idle_since = Instant::now();
                }
            }
        }
    });
    let mut times = vec![];
    for i in 0..=N_E2E {
        while rx.try_recv().is_ok() {} // stragglers of the previous reply
        let t = Instant::now();
        writeln!(stdin, "{SHORT}").ok()?;
        stdin.flush().ok()?;
        let first = rx.recv_timeout(Duration::from_secs(30)).ok()?;
        if i > 0 {
            times.push(first.duration_since(t).as_secs_f64() * 1000.0);
        }
        // let the reply finish playing (paced in real time) before the next one
        while rx.recv_timeout(Duration::from_millis(400)).is_ok() {}
        std::thread::sleep(Duration::from_millis(2500));
    }
    drop(stdin);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&state);
    let med = median(times.clone());
    println!("{name:<10} end-to-end: time to first audio median {med:.1} ms (min {:.1}, max {:.1}, n={N_E2E})",
        times.iter().cloned().fold(f64::MAX, f64::min), times.iter().cloned().fold(0.0, f64::max));
    Some(med)
}

/// Time to first audio over the wire: the engine against a stand-in that answers each request
/// after `delay` with 2 s of audio (median of N after a warm-up).
fn over_the_wire(name: &str, kind: EngineKind, delay_ms: u64) -> Option<f64> {
    let script = |rate| (0..=N).map(|_| Act::After(Duration::from_millis(delay_ms), tone(rate, 2000))).collect();
    let mut cfg = config(kind, false);
    // the stand-ins are kept alive until the end of the measurement
    let (_speech, _wyoming);
    cfg.server.url = Some(match kind {
        EngineKind::Openai => {
            _speech = Speech::start(script(24_000));
            _speech.base_url()
        }
        _ => {
            _wyoming = Wyoming::start(script(WYOMING_RATE));
            _wyoming.url()
        }
    });
    let mut e = engine::select(&cfg).map_err(|err| println!("{name}: {err:#}")).ok()?;
    Some(warm_median(e.as_mut(), &format!("{name:<10} over the wire, server delay {delay_ms} ms")))
}

/// One warm-up (connection, runtime, a server's lazy voice load), then the median of N times
/// to first audio, printed with `label`.
fn warm_median(e: &mut dyn engine::SpeechEngine, label: &str) -> f64 {
    first_audio_ms(e, SHORT);
    let times: Vec<f64> = (0..N).map(|_| first_audio_ms(e, SHORT)).collect();
    let med = median(times.clone());
    println!(
        "{label}: time to first audio median {med:.1} ms (min {:.1}, max {:.1}, n={N})",
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max)
    );
    med
}

/// The same voice served by a real wyoming-piper (Python piper-tts) on 127.0.0.1.
fn real_wyoming_piper() -> Option<f64> {
    let data = tempfile::tempdir().ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let _service = wyoming_piper(port, data.path());
    let mut cfg = config(EngineKind::Wyoming, false);
    cfg.server.url = Some(format!("tcp://127.0.0.1:{port}"));
    let mut e = engine::select(&cfg).map_err(|err| println!("wyoming-piper: {err:#}")).ok()?;
    Some(warm_median(e.as_mut(), "wyoming-piper (real, 127.0.0.1)"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("load at start: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    if std::env::args().any(|a| a == "--wire") {
        // only the engines over the wire, against Piper in-process
        in_process("piper", EngineKind::Piper, false);
        for delay in [0, 200] {
            over_the_wire("openai", EngineKind::Openai, delay);
            over_the_wire("wyoming", EngineKind::Wyoming, delay);
        }
        real_wyoming_piper();
        println!("load at end: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
        return;
    }
    for delay in [0, 200] {
        over_the_wire("openai", EngineKind::Openai, delay);
        over_the_wire("wyoming", EngineKind::Wyoming, delay);
    }
    let piper = in_process("piper", EngineKind::Piper, false);
    // The same voice without the first-clause split (what a whole-sentence seam such as a
    // persistent piper-tts process gives; compare with bench-support/piper_python_ttfa.py).
    in_process("piper-whole", EngineKind::Piper, true);
    let espeak = in_process("espeak-ng", EngineKind::EspeakNg, false);
    let piper_e2e = end_to_end("piper", "piper");
    let espeak_e2e = end_to_end("espeak-ng", "espeak-ng");
    let fmt = |v: Option<f64>| v.map(|x| format!("{x:.0} ms")).unwrap_or_else(|| "n/a".into());
    println!(
        "summary: time to first audio piper {} (e2e {}, target < 250 ms), espeak-ng {} (e2e {}, target < 50 ms)",
        fmt(piper), fmt(piper_e2e), fmt(espeak), fmt(espeak_e2e)
    );
}
