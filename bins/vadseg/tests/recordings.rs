//! vadseg on real recorded speech and noise: the voice prompts and the noise sample that the
//! Debian package alsa-utils ships in /usr/share/sounds/alsa (installed by scripts/setup).

mod common;

use common::*;

fn recorded_call() -> Call {
    let names = ["Front_Center", "Rear_Left", "Side_Right", "Front_Left", "Rear_Center"];
    let utts: Vec<Utterance> = names.iter().map(|n| alsa_recording(n)).collect();
    build_call(&utts, 1.0, &[1.5, 2.0, 1.6, 1.8], 1.5)
}

#[test]
fn recorded_voice_one_segment_per_utterance_in_silence() {
    let dir = tempfile::tempdir().unwrap();
    let call = recorded_call();
    let out = run_call(dir.path(), "recorded", &call.samples, &[]);
    assert_one_segment_per_utterance(&call, &out, "recorded voice");
}

#[test]
fn recorded_voice_one_segment_per_utterance_in_brown_noise() {
    let dir = tempfile::tempdir().unwrap();
    let mut call = recorded_call();
    let noise = brown_noise(call.samples.len(), -20.0, 23);
    mix_noise(&mut call, &noise, 10.0);
    let out = run_call(dir.path(), "recorded-brown", &call.samples, &[]);
    assert_one_segment_per_utterance(&call, &out, "recorded voice, brown noise at 10 dB SNR");
}

#[test]
fn recorded_noise_makes_no_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (_, noise) = tgvoice::resample::read_wav_mono(std::fs::File::open(alsa_sound("Noise")).unwrap()).unwrap();
    let looped: Vec<i16> = noise.iter().cycle().take(30 * RATE as usize).copied().collect();
    let out = run_call(dir.path(), "recorded-noise", &looped, &[]);
    assert!(out.segments.is_empty(), "{:?}", out.segments.iter().map(|s| s.span_48k()).collect::<Vec<_>>());
}
