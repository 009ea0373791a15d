//! espeak-ng through libespeak-ng in this process (the default `espeak-ng` engine when the
//! library loads): synthesis streams out through espeak's callback in ~20 ms pieces, so the
//! first audio is ready in a few milliseconds, with no process start per utterance.
//! Falls back to the `espeak-ng` program ([`super::EspeakEngine`]) when the library is missing.

use super::{Audio, SpeechEngine};
use anyhow::{bail, Result};
use libloading::Library;
use std::cell::RefCell;
use std::ffi::{c_int, c_short, c_uint, c_void, CString};

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_INITIALIZE_DONT_EXIT: c_int = 0x8000;
const ESPEAK_CHARS_UTF8: c_uint = 1;
/// Pause at the end of the text, as the espeak-ng program makes.
const ESPEAK_ENDPAUSE: c_uint = 0x1000;
const POS_CHARACTER: c_int = 1;
const ESPEAK_RATE: c_int = 1;
/// Milliseconds of audio per callback.
const BUFFER_MS: c_int = 20;

type SynthCallback = extern "C" fn(*mut c_short, c_int, *mut c_void) -> c_int;
type InitializeFn = unsafe extern "C" fn(c_int, c_int, *const i8, c_int) -> c_int;
type SetVoiceFn = unsafe extern "C" fn(*const i8) -> c_int;
type SetCallbackFn = unsafe extern "C" fn(SynthCallback);
type SetParameterFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type SynthFn = unsafe extern "C" fn(*const c_void, usize, c_uint, c_int, c_uint, c_uint, *mut c_uint, *mut c_void) -> c_int;

thread_local! {
    /// Where the callback puts audio during `espeak_Synth` (same thread, synchronous mode).
    static SINK: RefCell<Option<Box<dyn FnMut(&[i16]) -> bool>>> = RefCell::new(None);
}

extern "C" fn on_audio(wav: *mut c_short, n: c_int, _events: *mut c_void) -> c_int {
    if wav.is_null() || n <= 0 {
        return 0;
    }
    let samples = unsafe { std::slice::from_raw_parts(wav as *const i16, n as usize) };
    SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(f) => {
            if f(samples) {
                0
            } else {
                1 // abort synthesis
            }
        }
        None => 0,
    })
}

pub struct EspeakLibEngine {
    _lib: Library,
    synth: SynthFn,
    rate: u32,
    label: String,
}

unsafe impl Send for EspeakLibEngine {}

impl EspeakLibEngine {
    pub fn new(voice: &str, speed: u32) -> Result<Self> {
        let lib = super::phonemize::load_espeak_library()?;
        unsafe {
            let init = *lib.get::<InitializeFn>(b"espeak_Initialize\0")?;
            let set_voice = *lib.get::<SetVoiceFn>(b"espeak_SetVoiceByName\0")?;
            let set_callback = *lib.get::<SetCallbackFn>(b"espeak_SetSynthCallback\0")?;
            let set_parameter = *lib.get::<SetParameterFn>(b"espeak_SetParameter\0")?;
            let synth = *lib.get::<SynthFn>(b"espeak_Synth\0")?;
            let rate = init(AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, std::ptr::null(), ESPEAK_INITIALIZE_DONT_EXIT);
            if rate <= 0 {
                bail!("espeak_Initialize failed (is espeak-ng-data installed?)");
            }
            let cvoice = CString::new(voice)?;
            if set_voice(cvoice.as_ptr()) != 0 {
                bail!("espeak-ng has no voice {voice:?}");
            }
            set_parameter(ESPEAK_RATE, speed as c_int, 0);
            set_callback(on_audio);
            Ok(EspeakLibEngine { _lib: lib, synth, rate: rate as u32, label: format!("espeak-ng {voice} (libespeak-ng)") })
        }
    }
}

impl SpeechEngine for EspeakLibEngine {
    fn name(&self) -> &str {
        &self.label
    }

    fn synthesize(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<()> {
        let clean: String = text.chars().map(|c| if c == '\0' { ' ' } else { c }).collect();
        let ctext = CString::new(clean)?;
        let rate = self.rate;
        // The callback runs inside espeak_Synth on this thread; `emit` outlives that call.
        let emit_ptr: *mut (dyn FnMut(Audio) -> bool + '_) = emit;
        let emit_static: *mut (dyn FnMut(Audio) -> bool + 'static) = unsafe { std::mem::transmute(emit_ptr) };
        SINK.with(|s| {
            *s.borrow_mut() = Some(Box::new(move |samples: &[i16]| unsafe {
                (*emit_static)(Audio { rate, samples: samples.to_vec(), span: None, edges: false })
            }))
        });
        let err = unsafe {
            (self.synth)(
                ctext.as_ptr() as *const c_void,
                ctext.as_bytes().len() + 1,
                0,
                POS_CHARACTER,
                0,
                ESPEAK_CHARS_UTF8 | ESPEAK_ENDPAUSE,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        SINK.with(|s| *s.borrow_mut() = None);
        if err != 0 {
            bail!("espeak_Synth failed (error {err})");
        }
        Ok(())
    }
}
