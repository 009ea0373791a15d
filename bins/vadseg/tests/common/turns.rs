//! End of turn by meaning: Piper-voiced requests (the assistant's own voice, through the real
//! tts-writer), complete questions and requests with a hesitation mid-sentence, played in real
//! time through `tgcat --realtime | vadseg`, and what the turns' ends measure.

/// vadseg's flag for the provisioned turn model.
pub const MODEL_ON: [&str; 2] = ["--turn-model", "auto"];

use super::*;
use std::time::Duration;

/// Requests with a hesitation mid-sentence: (before, after).
pub const HESITATIONS: [(&str, &str); 10] = [
    ("I'd like a table for", "four people."),
    ("My number is five five five", "one two three."),
    ("Can you book a flight to", "Paris next Monday?"),
    ("I want to order a large", "pepperoni pizza."),
    ("Please set an alarm for", "seven in the morning."),
    ("The meeting is on", "Thursday afternoon."),
    ("Could you remind me to", "call my mother tonight?"),
    ("I'm looking for a hotel near", "the train station."),
    ("My address is twelve", "Baker Street."),
    ("What's the weather like in", "London tomorrow?"),
];

/// How the caller hesitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hesitation {
    /// "I'd like a table for, um…" then silence: the common, filled hesitation.
    Filled,
    /// "I'd like a table for…" then silence. Piper speaks the fragment as a sentence of its
    /// own (falling, final intonation), which Smart Turn often hears as complete.
    Silent,
}

impl Hesitation {
    fn before(self, text: &str) -> String {
        match self {
            Hesitation::Filled => format!("{text}, um..."),
            Hesitation::Silent => format!("{text}..."),
        }
    }
}

/// Complete questions.
pub const QUESTIONS: [&str; 10] = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Can you tell me the time?",
    "What's the weather like today?",
    "Where is the nearest pharmacy?",
    "How do I get to the airport?",
    "What time does the store close?",
    "Who wrote Romeo and Juliet?",
    "How far away is the moon?",
    "Is it going to rain tomorrow?",
];

/// Hesitation of request `i`: 600 … 900 ms.
pub fn hesitation_ms(i: usize) -> usize {
    600 + 300 * i / (HESITATIONS.len() - 1)
}

/// Piper speaks each text (one tts-writer process, one turn per line): 48 kHz utterances.
pub fn piper(dir: &Path, texts: &[&str]) -> Vec<Utterance> {
    let voice = cache_dir().join("models/piper/en_US-joe-medium.onnx");
    assert!(voice.exists(), "Piper voice {} missing: run scripts/setup", voice.display());
    let input: String = texts.iter().map(|t| format!("{t}\n")).collect();
    let mut child = Command::new(bin_path("tts-writer"))
        .args(["--engine", "piper", "--unpaced", "--output-format", "frames", "-q"])
        .arg("--piper-model")
        .arg(&voice)
        .env("ORT_DYLIB_PATH", ort_dylib())
        .env("TGVOICE_STATE_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tts-writer (cargo build --release -p tts-writer)");
    let reader = collect(child.stdout.take().unwrap());
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let bytes = reader.join().unwrap();
    assert!(child.wait().unwrap().success(), "tts-writer failed");
    let mut d = FrameDecoder::new();
    d.push(&bytes);
    let mut by_turn: Vec<(u64, Vec<i16>)> = vec![];
    while let Some(f) = d.next() {
        if let Frame::Audio(a) = f.unwrap() {
            assert_eq!(a.sample_rate, RATE);
            match by_turn.last_mut() {
                Some((t, s)) if *t == a.turn => s.extend(a.samples),
                _ => by_turn.push((a.turn, a.samples)),
            }
        }
    }
    assert_eq!(by_turn.len(), texts.len(), "one reply per line from tts-writer");
    texts
        .iter()
        .zip(by_turn)
        .map(|(text, (_, samples))| {
            let (onset, offset) = speech_bounds(&samples);
            Utterance { text: text.to_string(), samples, onset, offset }
        })
        .collect()
}

/// `a`'s speech, `gap_ms` of silence, then `b`'s speech: one request with a hesitation.
pub fn join_with_hesitation(a: &Utterance, b: &Utterance, gap_ms: usize) -> Utterance {
    let mut samples = a.samples[..a.offset].to_vec();
    samples.resize(samples.len() + gap_ms * RATE as usize / 1000, 0);
    let b_speech = &b.samples[b.onset..];
    samples.extend_from_slice(b_speech);
    let offset = samples.len() - (b.samples.len() - b.offset);
    Utterance { text: format!("{} … {}", a.text, b.text), samples, onset: a.onset, offset }
}

/// `tgcat --realtime WAV | vadseg ARGS`: vadseg's output and its log.
pub fn run_call_realtime(dir: &Path, name: &str, samples: &[i16], vadseg_args: &[&str]) -> (Output, String) {
    let wav = dir.join(format!("{name}.wav"));
    write_wav_mono(&wav, RATE, samples).unwrap();
    if let Some(keep) = std::env::var_os("VADSEG_KEEP_AUDIO") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&wav, Path::new(&keep).join(format!("{name}.wav"))).unwrap();
    }
    let mut vadseg = vadseg_command(vadseg_args).spawn().unwrap();
    // Let the models load before the call starts, as on a live line.
    std::thread::sleep(Duration::from_millis(800));
    let mut tgcat =
        Command::new(bin_path("tgcat")).args(["--realtime", "-q"]).arg(&wav).stdout(vadseg.stdin.take().unwrap()).spawn().unwrap();
    let out = vadseg.wait_with_output().unwrap();
    assert!(tgcat.wait().unwrap().success());
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "vadseg failed: {log}");
    (decode_output(&out.stdout), log)
}

/// Where a capture time falls in the call, in 48 kHz samples (from a segment's first frame).
pub fn call_position(seg: &Segment, capture_us: u64) -> f64 {
    let index_16k = seg.first_index as f64 + (capture_us as f64 - seg.first_capture_us as f64) * 16_000.0 / 1e6;
    index_16k * 3.0
}

/// Capture time of call position `pos_48k` (from a segment's first frame).
pub fn capture_time(seg: &Segment, pos_48k: usize) -> f64 {
    seg.first_capture_us as f64 + (pos_48k as f64 / 3.0 - seg.first_index as f64) * 1e6 / 16_000.0
}

/// One utterance of a call and the segments vadseg made of it.
#[derive(Debug)]
pub struct TurnResult {
    pub text: String,
    /// Segments overlapping the utterance's speech.
    pub segments: usize,
    /// Silence between the utterance's last audible sample and the audio that decided its
    /// end (speech-end's `vad_audio_until`), ms; None when it did not end in one segment.
    pub eot_silence_ms: Option<f64>,
    /// Wall-clock time from the last audible sample to speech-end being sent (`trace.eot`):
    /// the silence above plus waiting for the model; meaningful when played in real time.
    pub eot_after_ms: Option<f64>,
    pub reasons: Vec<String>,
    pub p_complete: Vec<Option<f64>>,
}

pub fn turn_results(call: &Call, out: &Output) -> Vec<TurnResult> {
    call.spans
        .iter()
        .zip(&call.texts)
        .map(|(&(on, off), text)| {
            let segs: Vec<&Segment> = out
                .segments
                .iter()
                .filter(|s| {
                    let (a, b) = s.span_48k();
                    a < off && b > on
                })
                .collect();
            let ends: Vec<&Event> = segs.iter().filter_map(|s| s.end.as_ref()).collect();
            let (eot_silence_ms, eot_after_ms) = match (segs.as_slice(), ends.as_slice()) {
                ([seg], [end]) => {
                    let until = end.get_u64("vad_audio_until").expect("vad_audio_until");
                    let eot = end.trace.get("eot").expect("trace.eot") as f64;
                    (
                        Some((call_position(seg, until) - off as f64) / RATE as f64 * 1000.0),
                        Some((eot - capture_time(seg, off)) / 1000.0),
                    )
                }
                _ => (None, None),
            };
            TurnResult {
                text: text.clone(),
                segments: segs.len(),
                eot_silence_ms,
                eot_after_ms,
                reasons: ends.iter().map(|e| e.get_str("eot_reason").unwrap_or("?").to_string()).collect(),
                p_complete: ends.iter().map(|e| e.extra.get("p_complete").and_then(|v| v.as_f64())).collect(),
            }
        })
        .collect()
}

pub fn print_results(what: &str, results: &[TurnResult]) {
    eprintln!("{what}:");
    for r in results {
        let silence = match (r.eot_silence_ms, r.eot_after_ms) {
            (Some(s), Some(a)) => format!("silence {s:4.0} ms, sent after {a:4.0} ms"),
            _ => format!("{:<33}", "—"),
        };
        let p: Vec<String> = r.p_complete.iter().map(|p| p.map(|p| format!("{p:.2}")).unwrap_or("-".into())).collect();
        eprintln!("  {silence}  {} segment(s)  {:<24} p(complete) {:<12} {}", r.segments, r.reasons.join(","), p.join(","), r.text);
    }
}

/// The value at percentile `p` (nearest rank) of `xs`.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((p / 100.0 * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

/// vadseg's closing log line about the turn model: (answers, mean ms, max ms).
pub fn inference_stats(log: &str) -> Option<(u64, f64, f64)> {
    let line = log.lines().find(|l| l.contains("turn model:") && l.contains("inference"))?;
    let nums: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| !s.is_empty() && s.chars().any(|c| c.is_ascii_digit()))
        .filter_map(|s| s.parse().ok())
        .collect();
    let n = nums.len();
    (n >= 3).then(|| (nums[n - 3] as u64, nums[n - 2], nums[n - 1]))
}

/// The ten hesitation requests as one call (3 s between them, longer than any end-of-turn wait).
pub fn hesitation_call(dir: &Path, kind: Hesitation) -> Call {
    let texts: Vec<String> = HESITATIONS.iter().flat_map(|(a, b)| [kind.before(a), b.to_string()]).collect();
    let parts = piper(dir, &texts.iter().map(String::as_str).collect::<Vec<_>>());
    let utts: Vec<Utterance> =
        parts.chunks(2).enumerate().map(|(i, ab)| join_with_hesitation(&ab[0], &ab[1], hesitation_ms(i))).collect();
    build_call(&utts, 1.0, &[3.0], 3.0)
}

/// The ten complete questions as one call.
pub fn question_call(dir: &Path) -> Call {
    build_call(&piper(dir, &QUESTIONS), 1.0, &[3.0], 3.0)
}
