//! What the engines that speak to a server share: PCM bytes arriving in any pieces turned into
//! [`Audio`] of about [`PIECE_MS`] each as they come, a WAV header read off the front of a
//! stream, the API key (never logged), and the cancellation check while waiting for bytes.

use super::Audio;
use anyhow::{bail, Result};
use std::path::Path;
use std::time::Duration;

/// Audio is handed on in pieces of about this much as it arrives (the first piece of a reply
/// is not held back for more).
pub const PIECE_MS: u32 = 100;
/// How often an engine waiting for bytes asks whether the reply is still wanted.
pub const POLL: Duration = Duration::from_millis(20);

/// Ask `emit` whether the reply is still wanted without handing it audio (an [`Audio`] with
/// no samples is a question, never played: see [`super::SpeechEngine::synthesize`]).
pub fn still_wanted(emit: &mut dyn FnMut(Audio) -> bool) -> bool {
    emit(Audio { rate: 0, samples: vec![], span: None, edges: false })
}

/// Interleaved PCM (16-bit little-endian, any channel count) in, mono [`Audio`] pieces out.
pub struct PcmStream {
    rate: u32,
    channels: usize,
    /// Bytes of an incomplete sample frame.
    partial: Vec<u8>,
    batch: Vec<i16>,
    piece: usize,
    /// Samples handed on so far.
    pub emitted: usize,
}

impl PcmStream {
    pub fn new(rate: u32, width: u16, channels: u16) -> Result<PcmStream> {
        if width != 2 {
            bail!("{}-bit audio; only 16-bit PCM is supported", width as u32 * 8);
        }
        if channels == 0 || !(1000..=384_000).contains(&rate) {
            bail!("unusable audio format: {rate} Hz, {channels} channels");
        }
        Ok(PcmStream { rate, channels: channels as usize, partial: vec![], batch: vec![], piece: (rate * PIECE_MS / 1000) as usize, emitted: 0 })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Take `bytes`; hand on a piece once one is full. False when `emit` said stop.
    pub fn push(&mut self, bytes: &[u8], emit: &mut dyn FnMut(Audio) -> bool) -> bool {
        self.partial.extend_from_slice(bytes);
        let frame = 2 * self.channels;
        let whole = self.partial.len() / frame * frame;
        for f in self.partial[..whole].chunks_exact(frame) {
            let sum: i32 = f.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as i32).sum();
            self.batch.push((sum / self.channels as i32) as i16);
        }
        self.partial.drain(..whole);
        if self.batch.len() >= self.piece {
            return self.flush(emit);
        }
        true
    }

    /// Hand on what is batched (the end of the stream).
    pub fn flush(&mut self, emit: &mut dyn FnMut(Audio) -> bool) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let samples = std::mem::take(&mut self.batch);
        self.emitted += samples.len();
        emit(Audio { rate: self.rate, samples, span: None, edges: false })
    }
}

/// The format of a WAV stream and where its samples start, once enough of it came to tell.
#[derive(Debug, PartialEq)]
pub struct WavStart {
    pub rate: u32,
    pub channels: u16,
    pub width: u16,
    /// Offset of the first sample byte.
    pub data_at: usize,
    /// Sample bytes the header announces, unless it is a streaming placeholder (0, 0xFFFFFFFF,
    /// 0x7FFFFFFF and the like: a server that cannot know the length in advance).
    pub data_len: Option<usize>,
}

/// Read the header at the front of a streamed WAV: `Ok(None)` until enough bytes are there.
pub fn wav_start(bytes: &[u8]) -> Result<Option<WavStart>> {
    if bytes.len() < 12 {
        if !b"RIFF".starts_with(&bytes[..bytes.len().min(4)]) {
            bail!("not a WAV stream (starts with {:?})", tgvoice::log::snippet(bytes, 160));
        }
        return Ok(None);
    }
    if &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        bail!("not a WAV stream (starts with {:?})", tgvoice::log::snippet(bytes, 160));
    }
    let mut fmt: Option<(u32, u16, u16)> = None;
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        if id == b"data" {
            let Some((rate, channels, width)) = fmt else { bail!("WAV data before its fmt chunk") };
            let data_len = (size != 0 && size < 0x7000_0000).then_some(size as usize);
            return Ok(Some(WavStart { rate, channels, width, data_at: pos + 8, data_len }));
        }
        let size = size as usize;
        if id == b"fmt " {
            if bytes.len() < pos + 8 + 16 {
                return Ok(None);
            }
            let f = &bytes[pos + 8..];
            let format = u16::from_le_bytes([f[0], f[1]]);
            let channels = u16::from_le_bytes([f[2], f[3]]);
            let rate = u32::from_le_bytes(f[4..8].try_into().unwrap());
            let bits = u16::from_le_bytes([f[14], f[15]]);
            if format != 1 && format != 0xFFFE {
                bail!("WAV format {format} is not PCM (ask the server for 16-bit PCM)");
            }
            fmt = Some((rate, channels, bits.div_ceil(8)));
        }
        if size > 1 << 20 {
            bail!("WAV chunk {:?} of {size} bytes before the data", String::from_utf8_lossy(id));
        }
        pos += 8 + size + (size & 1);
    }
    Ok(None)
}

/// A 16-bit PCM WAV header with the sizes given (a streaming server writes placeholders such
/// as 0xFFFFFFFF): for tests and stand-ins.
pub fn wav_header(rate: u32, channels: u16, riff_size: u32, data_size: u32) -> Vec<u8> {
    let mut wav = vec![];
    wav.extend(b"RIFF");
    wav.extend(riff_size.to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes());
    wav.extend(1u16.to_le_bytes());
    wav.extend(channels.to_le_bytes());
    wav.extend(rate.to_le_bytes());
    wav.extend((rate * 2 * channels as u32).to_le_bytes());
    wav.extend((2 * channels).to_le_bytes());
    wav.extend(16u16.to_le_bytes());
    wav.extend(b"data");
    wav.extend(data_size.to_le_bytes());
    wav
}

pub use tgvoice::secret::Secret;

/// The environment variable holding the TTS server's API key.
pub const KEY_VAR: &str = "TGVOICE_TTS_API_KEY";

/// The key from `file` (which must be mode 0600 or stricter), else from [`KEY_VAR`]; none when
/// neither is set (servers on the LAN usually want none).
pub fn api_key(file: Option<&Path>) -> Result<Option<Secret>> {
    tgvoice::secret::api_key("--tts-key-file", file, KEY_VAR)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with a LIST chunk before the data, as some servers write it.
    fn header(data_size: u32) -> Vec<u8> {
        let mut wav = wav_header(24000, 1, 0xffff_ffff, data_size);
        let data = wav.split_off(wav.len() - 8);
        wav.extend(b"LIST");
        wav.extend(4u32.to_le_bytes());
        wav.extend(b"INFO");
        wav.extend(data);
        wav
    }

    #[test]
    fn a_streamed_wav_header_is_read_whatever_its_data_length_says() {
        for (size, len) in [(0, None), (0xffff_ffff, None), (4800, Some(4800))] {
            let wav = header(size);
            for cut in 0..wav.len() {
                assert_eq!(wav_start(&wav[..cut]).unwrap(), None, "{cut} bytes are not enough");
            }
            let start = wav_start(&wav).unwrap().unwrap();
            assert_eq!(start, WavStart { rate: 24000, channels: 1, width: 2, data_at: wav.len(), data_len: len });
        }
        assert!(wav_start(b"{\"error\": \"x\"}").is_err());
        assert!(wav_start(b"<h").is_err());
    }

    #[test]
    fn pcm_arriving_in_odd_pieces_comes_out_whole_in_pieces_of_100_ms() {
        let stereo: Vec<u8> = (0..4800i16).flat_map(|i| [i, i + 2]).flat_map(|s| s.to_le_bytes()).collect();
        let mut pcm = PcmStream::new(24000, 2, 2).unwrap();
        let mut got: Vec<Vec<i16>> = vec![];
        let mut emit = |a: Audio| {
            assert_eq!(a.rate, 24000);
            got.push(a.samples);
            true
        };
        for piece in stereo.chunks(333) {
            assert!(pcm.push(piece, &mut emit));
        }
        assert!(pcm.flush(&mut emit));
        assert!(got.iter().rev().skip(1).all(|p| p.len() >= 2400), "{:?}", got.iter().map(|p| p.len()).collect::<Vec<_>>());
        assert_eq!(got.concat(), (0..4800i16).map(|i| i + 1).collect::<Vec<_>>());
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-test\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = api_key(Some(&path)).unwrap_err();
        assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = api_key(Some(&path)).unwrap().unwrap();
        assert_eq!(key.expose(), "sk-test");
        assert_eq!(format!("{key:?}"), "Secret(…)");
    }
}
