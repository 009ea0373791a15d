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
    let mut starts = vec![];
    let mut ends = vec![];
    for (label, snr) in [("silence", None), ("pink noise 10 dB SNR", Some(10.0))] {
        let mut call = build_call(&utts, 1.0, &[1.5, 1.8, 1.6, 2.0], 1.5);
        if let Some(snr) = snr {
            let n = pink_noise(call.samples.len(), -20.0, 5);
            mix_noise(&mut call, &n, snr);
        }
        let (s, e) = latency_run(dir.path(), &call, label);
        starts.extend(s);
        ends.extend(e);
    }
    let (s50, smax) = stats(&mut starts);
    let (e50, emax) = stats(&mut ends);
    println!(
        "SUMMARY vadseg: RTF {rtf:.4} (target < 0.02); speech-start latency beyond {MIN_SPEECH_MS} ms guard: median {s50:.0} ms, max {smax:.0} ms; speech-end latency beyond {EOT_SILENCE_MS} ms silence: median {e50:.0} ms, max {emax:.0} ms (target < 40 ms each)"
    );
}

fn stats(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[v.len() - 1])
}

/// tgcat FILE | vadseg, returning vadseg's CPU seconds, wall seconds and segment count.
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
fn latency_run(dir: &std::path::Path, call: &Call, label: &str) -> (Vec<f64>, Vec<f64>) {
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
    let mut s_lat = vec![];
    let mut e_lat = vec![];
    for (i, &(on, off)) in call.spans.iter().enumerate() {
        let (Some((se, sa)), Some((ee, ea))) = (starts.get(i), ends.get(i)) else { continue };
        let s = (*sa as f64 - at(on)) / 1000.0 - MIN_SPEECH_MS;
        let e = (*ea as f64 - at(off)) / 1000.0 - EOT_SILENCE_MS;
        let det_on = (se.trace.get("speech_start").unwrap() as f64 - at(on)) / 1000.0;
        let det_off = (ee.trace.get("speech_end").unwrap() as f64 - at(off)) / 1000.0;
        println!(
            "  utterance {} ({:.2} s, {:?}): speech-start +{s:.0} ms, speech-end +{e:.0} ms beyond guards; Silero onset {det_on:+.0} ms, offset {det_off:+.0} ms vs energy",
            i + 1,
            (off - on) as f64 / RATE as f64,
            call.texts[i]
        );
        s_lat.push(s);
        e_lat.push(e);
    }
    (s_lat, e_lat)
}
