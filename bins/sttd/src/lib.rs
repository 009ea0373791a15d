//! sttd's parts, as a library so the benchmarks and tests can drive the real decoder:
//! [`engine`] (whisper.cpp and the decoding policy), [`moonshine`] (Moonshine Base through
//! ONNX Runtime), [`openai`] and [`wyoming`] (servers over the wire, sharing [`wire`]), [`guard`] (hallucinations and loops),
//! [`stage`] (the turn logic) and [`worker`] (the [`worker::Transcriber`] seam and its
//! thread). `main.rs` is the program.

pub mod config;
pub mod engine;
pub mod guard;
pub mod moonshine;
pub mod openai;
pub mod stage;
pub mod wire;
pub mod worker;
pub mod wyoming;
