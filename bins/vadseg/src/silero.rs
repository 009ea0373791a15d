//! [`SileroVad`]: the Silero VAD model (embedded in the `voice_activity_detector` crate) run by
//! ONNX Runtime, which `ort` loads at run time from `ORT_DYLIB_PATH` (the library from the
//! PyPI wheel `onnxruntime==1.22.1`, unpacked by scripts/setup).
//!
//! `ort` panics when the library is missing or unusable, so [`SileroVad::load`] checks the
//! path and `dlopen`s it first, then creates the model under `catch_unwind`: the user gets
//! one line saying how to install ONNX Runtime (exit 69), never a panic.

use anyhow::Result;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use tgvoice::cli::{exit, fail};
use voice_activity_detector::VoiceActivityDetector;

use crate::segmenter::{CHUNK, RATE};

pub const ORT_VERSION: &str = "1.22.1";

fn how_to_install() -> String {
    format!(
        "run scripts/setup (or pip install onnxruntime=={ORT_VERSION} and set ORT_DYLIB_PATH to \
         …/site-packages/onnxruntime/capi/libonnxruntime.so.{ORT_VERSION})"
    )
}

pub struct SileroVad {
    detector: VoiceActivityDetector,
}

impl SileroVad {
    /// Find and load ONNX Runtime, then create the model (one warm-up inference included).
    pub fn load() -> Result<Self> {
        let lib = locate_onnx_runtime()?;
        probe_library(&lib)?;
        let detector = quietly_catch(|| {
            let _ = ort::init_from(lib.display().to_string()).with_name("vadseg").commit();
            let mut d = VoiceActivityDetector::builder().sample_rate(RATE as i64).chunk_size(CHUNK).build()?;
            d.predict([0i16; CHUNK]);
            d.reset();
            Ok::<_, voice_activity_detector::Error>(d)
        })
        .map_err(|panic| {
            fail(exit::UNAVAILABLE, format!("ONNX Runtime at {} could not run the Silero model ({panic}); {}", lib.display(), how_to_install()))
        })?
        .map_err(|e| fail(exit::FAILURE, format!("cannot create the Silero VAD: {e}")))?;
        log::info!("Silero VAD ready (ONNX Runtime {})", lib.display());
        Ok(SileroVad { detector })
    }

    /// Speech probability of one 512-sample chunk (the model keeps state between chunks).
    pub fn probability(&mut self, chunk: &[i16]) -> f32 {
        self.detector.predict(chunk.iter().copied())
    }

    /// Forget the model state (new stream).
    pub fn reset(&mut self) {
        self.detector.reset();
    }
}

/// `ORT_DYLIB_PATH`, or the place scripts/setup puts the library.
fn locate_onnx_runtime() -> Result<PathBuf> {
    let path = match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let default = tgvoice::testkit::cache_dir().join("onnxruntime").join(format!("libonnxruntime.so.{ORT_VERSION}"));
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
