//! llm-relay — transcripts in, a streamed LLM reply out as speakable chunks (README.md).
//!
//! * [`policy`] — the turn policy: a pure state machine, events and the time in, commands out
//! * [`relay`] — its executor: the select loop, the streaming tasks, the sink, the history
//! * [`conversation`] — the conversation on disk and the request window
//! * [`provider`], [`stream`] — the LLM protocols and streaming with retries
//! * [`speakable`] — reply text to speakable chunks
//! * [`backchannel`], [`unfinished`], [`words`] — what the caller's words mean for the turn
//! * [`judge`] — the end judge: can the words stand as a whole request (a language model's view)
//! * [`tools`] — tools for the LLM from MCP servers; [`control`] — the built-in call-control tools
//! * [`config`] — flags and environment

pub mod backchannel;
pub mod config;
pub mod control;
pub mod conversation;
pub mod judge;
pub mod policy;
pub mod provider;
pub mod relay;
pub mod speakable;
pub mod stream;
pub mod tools;
pub mod unfinished;
pub mod words;
