//! [`SileroVad`]: the Silero VAD v5 model (the file the `voice_activity_detector` crate
//! embeds, kept in model/) run by ONNX Runtime through `ort`, which loads the library at run
//! time from `ORT_DYLIB_PATH` (from the PyPI wheel `onnxruntime==1.22.1`, unpacked by
//! scripts/setup). Each 512-sample chunk is fed with the 64 samples before it, as Silero v5
//! expects (the crate's own `predict` omits them; see model/README.md).
//!
//! `ort` panics when the library is missing or unusable, so [`SileroVad::load`] checks the
//! path and `dlopen`s it first, then creates the model under `catch_unwind`: the user gets
//! one line saying how to install ONNX Runtime (exit 69), never a panic.

use anyhow::{Context, Result};
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::Tensor;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use tgvoice::cli::{exit, fail};

use crate::segmenter::{CHUNK, RATE};

pub const ORT_VERSION: &str = tgvoice::paths::ONNX_RUNTIME_VERSION;
/// Silero VAD v5, as embedded in the crate voice_activity_detector 0.2.1 (see model/README.md).
const MODEL: &[u8] = include_bytes!("../model/silero_vad.onnx");
/// Samples of the previous chunk that Silero v5 sees in front of each 512-sample chunk.
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

fn how_to_install() -> String {
    format!(
        "run scripts/setup (or pip install onnxruntime=={ORT_VERSION} and set ORT_DYLIB_PATH to \
         …/site-packages/onnxruntime/capi/libonnxruntime.so.{ORT_VERSION})"
    )
}

pub struct SileroVad {
    session: Session,
    state: Vec<f32>,
    context: [f32; CONTEXT],
}

impl SileroVad {
    /// Find and load ONNX Runtime, then create the model (one warm-up inference included).
    pub fn load() -> Result<Self> {
        let lib = locate_onnx_runtime()?;
        probe_library(&lib)?;
        let session = quietly_catch(|| {
            let _ = ort::init_from(lib.display().to_string()).with_name("vadseg").commit();
            Session::builder()?
                .with_optimization_level(GraphOptimizationLevel::Level3)?
                .with_intra_threads(1)?
                .with_inter_threads(1)?
                .commit_from_memory(MODEL)
        })
        .map_err(|panic| {
            fail(exit::UNAVAILABLE, format!("ONNX Runtime at {} could not run the Silero model ({panic}); {}", lib.display(), how_to_install()))
        })?
        .map_err(|e| fail(exit::UNAVAILABLE, format!("ONNX Runtime at {} cannot load the Silero model ({e}); {}", lib.display(), how_to_install())))?;
        let mut vad = SileroVad { session, state: vec![0.0; STATE_LEN], context: [0.0; CONTEXT] };
        vad.probability(&[0; CHUNK]).context("Silero VAD warm-up inference failed")?;
        vad.reset();
        log::info!("Silero VAD ready (ONNX Runtime {})", lib.display());
        Ok(vad)
    }

    /// Speech probability of one 512-sample chunk (the model keeps state between chunks).
    pub fn probability(&mut self, chunk: &[i16]) -> Result<f32> {
        let mut input = Vec::with_capacity(CONTEXT + CHUNK);
        input.extend_from_slice(&self.context);
        input.extend(chunk.iter().map(|&s| s as f32 / 32768.0));
        input.resize(CONTEXT + CHUNK, 0.0);
        self.context.copy_from_slice(&input[input.len() - CONTEXT..]);
        let inputs = ort::inputs![
            "input" => Tensor::from_array(([1usize, CONTEXT + CHUNK], input))?,
            "state" => Tensor::from_array(([2usize, 1, 128], std::mem::take(&mut self.state)))?,
            "sr" => Tensor::from_array(((), vec![RATE as i64]))?,
        ];
        let outputs = self.session.run(inputs)?;
        let (_, state) = outputs["stateN"].try_extract_tensor::<f32>()?;
        self.state = state.to_vec();
        let (_, p) = outputs["output"].try_extract_tensor::<f32>()?;
        Ok(p.first().copied().unwrap_or(0.0))
    }

    /// Forget the model state (new stream).
    pub fn reset(&mut self) {
        self.state = vec![0.0; STATE_LEN];
        self.context = [0.0; CONTEXT];
    }
}

impl crate::stage::Vad for SileroVad {
    fn probability(&mut self, chunk: &[i16]) -> Result<f32> {
        SileroVad::probability(self, chunk)
    }
    fn reset(&mut self) {
        SileroVad::reset(self)
    }
}

/// `ORT_DYLIB_PATH`, or the place scripts/setup puts the library.
fn locate_onnx_runtime() -> Result<PathBuf> {
    let path = match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let default = tgvoice::paths::onnx_runtime();
            if !default.exists() {
                return Err(fail(
                    exit::UNAVAILABLE,
                    format!("ONNX Runtime not found (ORT_DYLIB_PATH is not set and {} does not exist); {}", default.display(), how_to_install()),
                ));
            }
            default
        }
    };
    if !path.is_file() {
        return Err(fail(exit::UNAVAILABLE, format!("ONNX Runtime not found at {}; {}", path.display(), how_to_install())));
    }
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

/// `dlopen` the library and look for `OrtGetApiBase`, so a wrong file is reported, not panicked on.
fn probe_library(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| fail(exit::CONFIG, "ORT_DYLIB_PATH contains a NUL byte"))?;
    // SAFETY: plain dlopen/dlsym/dlerror calls; the handle is kept open (ort opens it again).
    unsafe {
        let handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            let err = libc::dlerror();
            let why = if err.is_null() { "unknown error".to_string() } else { CStr::from_ptr(err).to_string_lossy().into_owned() };
            return Err(fail(exit::UNAVAILABLE, format!("ONNX Runtime at {} cannot be loaded ({why}); {}", path.display(), how_to_install())));
        }
        if libc::dlsym(handle, c"OrtGetApiBase".as_ptr()).is_null() {
            return Err(fail(
                exit::UNAVAILABLE,
                format!("{} is not ONNX Runtime (no OrtGetApiBase symbol); {}", path.display(), how_to_install()),
            ));
        }
    }
    Ok(())
}

/// Run `f`, turning a panic into its message without printing the default panic report.
fn quietly_catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    r.map_err(|p| {
        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "unknown panic".into())
    })
}
