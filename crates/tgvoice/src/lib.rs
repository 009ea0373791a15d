//! Shared core of the tgvoice stages.
//!
//! * [`frame`] — the frame codec (protocol v1, `fifo-layout.md` §2)
//! * [`event`] — control/text events and the per-turn [`event::TurnTrace`]
//! * [`fifo`] — byte endpoints with the FIFO rules (reopen, drop-and-reconnect, taps)
//! * [`sink`] / [`source`] — framed output (queued, non-blocking) and input (resyncing; the one
//!   frame reader, with modes for the stages, framecat and tts-writer's text lines)
//! * [`rundir`] — the private run directory and its FIFOs
//! * [`raw_link`] — the bridge side of an instance (raw links, JSON-lines taps); [`mulaw`] — G.711 μ-law
//! * [`audio`] — the link sample rate, RMS and dBFS
//! * [`paths`] — default cache, model, state and run directories
//! * [`text`] — where written text may be cut into spoken pieces (chunker and TTS segmenter)
//! * [`logmel`] — Whisper-style log-mel features (for the turn model)
//! * [`render`] — how frames are written for their reader: frames, JSON lines, or text on a terminal
//! * [`control`] — call control: transfer numbers (`NAME=NUMBER`)
//! * [`cli`] — shared flags, exit codes and the common `main` wrapper; [`log`] — log lines
//! * [`secret`] — API keys for the stages' servers; [`wyoming`] — the Wyoming event codec

pub mod audio;
pub mod cli;
pub mod clock;
pub mod control;
pub mod event;
pub mod fifo;
pub mod frame;
pub mod log;
pub mod logmel;
pub mod mulaw;
pub mod paths;
pub mod ready;
pub mod render;
pub mod raw_link;
pub mod resample;
pub mod rundir;
pub mod secret;
pub mod sink;
pub mod source;
pub mod testkit;
pub mod text;
pub mod wyoming;

pub use event::{Event, TurnTrace};
pub use fifo::Endpoint;
pub use frame::{AudioFrame, Frame};
pub use render::{Format, TextView};
pub use sink::{FrameSink, Output, TapFormat};
pub use source::{FrameSource, Input};
