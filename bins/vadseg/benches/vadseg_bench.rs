//! vadseg benchmark: real-time factor and decision latency, on generated calls (espeak-ng
//! speech, generated noise) through the real tgcat and vadseg binaries.
//!
//! * RTF: vadseg's CPU time (user + system, from wait4's rusage) per second of audio, on a
//!   ~2.5 min call fed as fast as possible.
//! * Decision latency: `tgcat --realtime` plays a call; we stamp the arrival of each
//!   speech-start / speech-end and subtract the source onset/offset capture time and the
//!   configured guard (minimum speech, end-of-turn silence). What remains is what vadseg adds:
//!   32 ms chunking, the model's reaction time, resampling and framing delays, inference.
//!
//! Run: `cargo build --release -p tgcat -p vadseg && cargo bench -p vadseg`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Instant;
use tgvoice::clock::now_us;
use tgvoice::frame::FrameDecoder;
use tgvoice::testkit::bin_path;
use tgvoice::Frame;

const MIN_SPEECH_MS: f64 = 250.0;
const EOT_SILENCE_MS: f64 = 600.0;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let utts = sentences(dir.path());

    sweep_defaults(dir.path(), &utts);

    // ---- RTF
    let mut long = vec![];
    for _ in 0..6 {
        long.extend(utts.iter().cloned());
    }
    let mut call = build_call(&long, 1.0, &[1.5, 2.0, 2.5, 1.7], 2.0);
    let noise = pink_noise(call.samples.len(), -20.0, 3);
    mix_noise(&mut call, &noise, 15.0);
    let audio_s = call.samples.len() as f64 / RATE as f64;
    let (cpu_s, wall_s, segments) = cpu_run(dir.path(), &call.samples);
    let rtf = cpu_s / audio_s;
    println!(
        "RTF: {audio_s:.1} s of audio ({} utterances, pink noise at 15 dB SNR) → {segments} segments; vadseg CPU {cpu_s:.3} s (wall {wall_s:.2} s, incl. model load) = RTF {rtf:.4} (target < 0.02)",
        long.len()
    );

    // ---- latency, in silence and in noise
    let mut lat = Latencies::default();
    for (label, snr) in [("silence", None), ("pink noise 10 dB SNR", Some(10.0))] {
        let mut call = build_call(&utts, 1.0, &[1.5, 1.8, 1.6, 2.0], 1.5);
        if let Some(snr) = snr {
            let n = pink_noise(call.samples.len(), -20.0, 5);
            mix_noise(&mut call, &n, snr);
        }
        lat.extend(latency_run(dir.path(), &call, label));
    }
    let f = |v: &mut Vec<f64>| {
        let (m, x) = stats(v);
        format!("median {m:.0} ms, max {x:.0} ms")
    };
    println!("decision latency over {} utterances:", lat.proc_start.len());
    println!("  speech-start after the audio that satisfied the guard: {}", f(&mut lat.proc_start));
    println!("  speech-end   after the audio that satisfied the guard: {}", f(&mut lat.proc_end));
    println!("  speech-start beyond {MIN_SPEECH_MS} ms from Silero's onset: {}; from the source onset: {}", f(&mut lat.guard_start), f(&mut lat.src_start));
    println!("  speech-end   beyond {EOT_SILENCE_MS} ms from Silero's offset: {}; from the source offset: {}", f(&mut lat.guard_end), f(&mut lat.src_end));
    let (ps, psx) = stats(&mut lat.proc_start);
    let (pe, pex) = stats(&mut lat.proc_end);
    let (gs, _) = stats(&mut lat.guard_start);
    let (ge, _) = stats(&mut lat.guard_end);
    println!(
        "SUMMARY vadseg: RTF {rtf:.4} (target < 0.02); decision latency speech-start median {ps:.0} / max {psx:.0} ms, speech-end median {pe:.0} / max {pex:.0} ms (target < 40); beyond guards from Silero's onset/offset: start {gs:.0} ms, end {ge:.0} ms (medians)"
    );
}

/// The measurements behind the defaults: run vadseg over the same calls with one setting
/// varied and count segments (5 utterances per call; noise alone should give 0).
fn sweep_defaults(dir: &std::path::Path, utts: &[Utterance]) {
    let quiet = build_call(utts, 1.0, &[1.5, 1.8, 1.6, 2.0], 1.5);
    let mut noisy = build_call(utts, 1.0, &[1.5, 1.8, 1.6, 2.0], 1.5);
    let pink = pink_noise(noisy.samples.len(), -20.0, 9);
    mix_noise(&mut noisy, &pink, 5.0);
    let mut loud = build_call(utts, 1.0, &[1.5, 1.8, 1.6, 2.0], 1.5);
    mix_noise(&mut loud, &pink, 0.0);
    let medley = noise_medley(17);
    // "segments/covered": segments found / utterances covered by exactly one segment that
    // starts ≤ 100 ms after the onset and ends ≥ the offset.
    let count = |name: &str, call: &Call, args: &[&str]| {
        let out = run_call(dir, name, &call.samples, args);
        let covered = call
            .spans
            .iter()
            .filter(|&&(on, off)| {
                out.segments.iter().filter(|s| s.span_48k().0 <= on + RATE as usize / 10 && s.span_48k().1 >= off).count() == 1
            })
            .count();
        format!("{}/{covered}", out.segments.len())
    };
    let medley = Call { samples: medley, spans: vec![], texts: vec![] };
    println!("defaults sweep (segments/covered utterances; each call has 5 utterances, the 60 s noise medley none):");
    for th in ["0.3", "0.4", "0.5", "0.6", "0.7"] {
        let a = ["--threshold", th];
        println!(
            "  threshold {th}: quiet call {}, call in pink noise at 5 dB SNR {}, at 0 dB SNR {}, noise alone {}",
            count("q", &quiet, &a),
            count("n", &noisy, &a),
            count("l", &loud, &a),
            count("m", &medley, &a)
        );
    }
    for ms in ["64", "128", "192", "250", "320"] {
        let a = ["--min-speech", ms];
        println!(
            "  min speech {ms} ms: call at 0 dB SNR {}, noise alone {}",
            count("l", &loud, &a),
            count("m", &medley, &a)
        );
    }
    for ms in ["150", "250", "350", "450", "600", "800"] {
        let a = ["--eot-silence", ms];
        println!("  end-of-turn silence {ms} ms: quiet call {}, call in noise {}", count("q", &quiet, &a), count("n", &noisy, &a));
    }
}

fn stats(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[v.len() - 1])
}

/// tgcat FILE | vadseg, returning vadseg's CPU seconds, wall seconds and segment count.
/// (The child is reaped by wait4 below, which also gives its rusage.)
#[allow(clippy::zombie_processes)]
fn cpu_run(dir: &std::path::Path, samples: &[i16]) -> (f64, f64, usize) {
    let wav = dir.join("rtf.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, samples).unwrap();
    // Frame the file first so the measurement is vadseg alone.
    let frames = Command::new(bin_path("tgcat")).arg(&wav).arg("-q").output().unwrap().stdout;
    let frames_path = dir.join("rtf.frames");
    std::fs::write(&frames_path, &frames).unwrap();
    let t = Instant::now();
    let mut child = Command::new(bin_path("vadseg"))
        .arg("-q")
        .env("ORT_DYLIB_PATH", ort_dylib())
        .stdin(std::fs::File::open(&frames_path).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 on our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    let wall = t.elapsed().as_secs_f64();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let segs = decode_output(&out.join().unwrap()).segments.len();
    (tv(ru.ru_utime) + tv(ru.ru_stime), wall, segs)
}

/// Play `call` in real time through tgcat → vadseg; per utterance, latency of speech-start
/// and speech-end beyond the guards (ms).
fn latency_run(dir: &std::path::Path, call: &Call, label: &str) -> Latencies {
    let wav = dir.join("latency.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, &call.samples).unwrap();
    let mut vadseg = Command::new(bin_path("vadseg"))
        .arg("-q")
        .env("ORT_DYLIB_PATH", ort_dylib())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the model to load before the clock starts (vadseg reads nothing until then).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut tgcat = Command::new(bin_path("tgcat"))
        .args(["--realtime", "-q"])
        .arg(&wav)
        .stdout(vadseg.stdin.take().unwrap())
        .spawn()
        .unwrap();
    let mut stdout = vadseg.stdout.take().unwrap();
    // (event, arrival µs) and audio frames' (capture_us, sample_index) for the epoch.
    let mut arrivals: Vec<(tgvoice::Event, u64)> = vec![];
    let mut epoch_us = None;
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 65536];
    loop {
        use std::io::Read;
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let now = now_us();
        dec.push(&buf[..n]);
        while let Some(f) = dec.next() {
            match f.unwrap() {
                Frame::Event(e) => arrivals.push((e, now)),
                Frame::Audio(a) => {
                    epoch_us.get_or_insert(a.capture_us - a.sample_index * 1_000_000 / 16_000);
                }
            }
        }
    }
    tgcat.wait().unwrap();
    vadseg.wait().unwrap();
    let epoch = epoch_us.expect("no segments") as f64;
    let at = |sample: usize| epoch + sample as f64 * 1e6 / RATE as f64;
    let starts: Vec<_> = arrivals.iter().filter(|(e, _)| e.is("speech-start")).collect();
    let ends: Vec<_> = arrivals.iter().filter(|(e, _)| e.is("speech-end")).collect();
    println!("latency ({label}): {} utterances, {} speech-start, {} speech-end", call.spans.len(), starts.len(), ends.len());
    let mut lat = Latencies::default();
    for (i, &(on, off)) in call.spans.iter().enumerate() {
        let (Some((se, sa)), Some((ee, ea))) = (starts.get(i), ends.get(i)) else { continue };
        let ms = |a: f64, b: f64| (a - b) / 1000.0;
        let (sa, ea) = (*sa as f64, *ea as f64);
        let s_on = se.trace.get("speech_start").unwrap() as f64;
        let s_off = ee.trace.get("speech_end").unwrap() as f64;
        let proc_s = ms(sa, se.get_u64("vad_audio_until").unwrap() as f64);
        let proc_e = ms(ea, ee.get_u64("vad_audio_until").unwrap() as f64);
        let guard_s = ms(sa, s_on) - MIN_SPEECH_MS;
        let guard_e = ms(ea, s_off) - EOT_SILENCE_MS;
        let src_s = ms(sa, at(on)) - MIN_SPEECH_MS;
        let src_e = ms(ea, at(off)) - EOT_SILENCE_MS;
        println!(
            "  utterance {} ({:.2} s, {:?}):\n    speech-start: {proc_s:.1} ms after the deciding sample; {guard_s:.0} ms beyond the guard from Silero's onset; {src_s:.0} ms from the source onset (Silero onset {:+.0} ms)\n    speech-end:   {proc_e:.1} ms after the deciding sample; {guard_e:.0} ms beyond the guard from Silero's offset; {src_e:.0} ms from the source offset (Silero offset {:+.0} ms)",
            i + 1,
            (off - on) as f64 / RATE as f64,
            call.texts[i],
            ms(s_on, at(on)),
            ms(s_off, at(off)),
        );
        lat.proc_start.push(proc_s);
        lat.proc_end.push(proc_e);
        lat.guard_start.push(guard_s);
        lat.guard_end.push(guard_e);
        lat.src_start.push(src_s);
        lat.src_end.push(src_e);
    }
    lat
}

#[derive(Default)]
struct Latencies {
    proc_start: Vec<f64>,
    proc_end: Vec<f64>,
    guard_start: Vec<f64>,
    guard_end: Vec<f64>,
    src_start: Vec<f64>,
    src_end: Vec<f64>,
}

impl Latencies {
    fn extend(&mut self, o: Latencies) {
        self.proc_start.extend(o.proc_start);
        self.proc_end.extend(o.proc_end);
        self.guard_start.extend(o.guard_start);
        self.guard_end.extend(o.guard_end);
        self.src_start.extend(o.src_start);
        self.src_end.extend(o.src_end);
    }
}
