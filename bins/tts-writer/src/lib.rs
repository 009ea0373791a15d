//! tts-writer — the last stage: speaks reply chunks and writes paced 48 kHz raw PCM.
//!
//! * [`input`] — frames or plain text lines (sniffed) on a thread of their own
//! * [`turns`] — which turn may speak: reply chunks, reply-end, and the cancel barrier
//! * [`engine`] — Piper (ONNX Runtime), espeak-ng, or any command
//! * [`synth`] — the synthesis thread (engine → 48 kHz pieces, pipelined)
//! * [`player`] — the real-time paced writer with lead control and fade-out on cancel
//! * [`ledger`] — the played-text accounting: what each reply was given and how much went out
//! * [`report`] — the per-turn latency line and the played-text report (metrics.jsonl)

pub mod engine;
pub mod input;
pub mod ledger;
pub mod player;
pub mod report;
pub mod synth;
pub mod turns;
