//! Writer for whisper.cpp's legacy ggml model file (the format of `ggml-tiny.en.bin`).
//!
//! Layout (little-endian): `u32 magic 0x67676d6c`, 11 `i32` hyper-parameters, the mel filters
//! (`i32 n_mel`, `i32 n_fft_bins`, f32 weights), the vocabulary (`i32 count`, then `u32 len` +
//! bytes per token), then tensor records: `i32 n_dims`, `i32 name_len`, `i32 dtype` (0 = f32,
//! 1 = f16), `n_dims × i32` dimensions innermost first, the name, the data.

use std::io::{self, Write};

pub const MAGIC: u32 = 0x6767_6d6c;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HParams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    /// 1 = mostly f16 (1-D tensors and positional embeddings stay f32).
    pub ftype: i32,
}

impl HParams {
    pub fn to_array(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32 = 0,
    F16 = 1,
}

/// One tensor ready to write: dims outermost first (like PyTorch), data already in `ttype`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub ttype: TensorType,
    pub data: Vec<u8>,
}

pub struct GgmlWriter<W: Write> {
    out: W,
}

impl<W: Write> GgmlWriter<W> {
    /// Write everything before the tensors.
    pub fn new(mut out: W, hp: &HParams, mel: (usize, usize, &[f32]), tokens: &[Vec<u8>]) -> io::Result<Self> {
        out.write_all(&MAGIC.to_le_bytes())?;
        for v in hp.to_array() {
            out.write_all(&v.to_le_bytes())?;
        }
        let (n_mel, n_bins, weights) = mel;
        assert_eq!(weights.len(), n_mel * n_bins);
        out.write_all(&(n_mel as i32).to_le_bytes())?;
        out.write_all(&(n_bins as i32).to_le_bytes())?;
        for w in weights {
            out.write_all(&w.to_le_bytes())?;
        }
        out.write_all(&(tokens.len() as i32).to_le_bytes())?;
        for t in tokens {
            out.write_all(&(t.len() as u32).to_le_bytes())?;
            out.write_all(t)?;
        }
        Ok(GgmlWriter { out })
    }

    pub fn tensor(&mut self, t: &Tensor) -> io::Result<()> {
        let elem = match t.ttype {
            TensorType::F32 => 4,
            TensorType::F16 => 2,
        };
        assert_eq!(t.data.len(), t.dims.iter().product::<usize>() * elem, "{}: data size", t.name);
        self.out.write_all(&(t.dims.len() as i32).to_le_bytes())?;
        self.out.write_all(&(t.name.len() as i32).to_le_bytes())?;
        self.out.write_all(&(t.ttype as i32).to_le_bytes())?;
        for d in t.dims.iter().rev() {
            self.out.write_all(&(*d as i32).to_le_bytes())?;
        }
        self.out.write_all(t.name.as_bytes())?;
        self.out.write_all(&t.data)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_tensor_record_layout() {
        let hp = HParams {
            n_vocab: 51864,
            n_audio_ctx: 1500,
            n_audio_state: 384,
            n_audio_head: 6,
            n_audio_layer: 4,
            n_text_ctx: 448,
            n_text_state: 384,
            n_text_head: 6,
            n_text_layer: 4,
            n_mels: 80,
            ftype: 1,
        };
        let mel = [0.5f32, 0.25];
        let mut w = GgmlWriter::new(Vec::new(), &hp, (1, 2, &mel), &[b"ab".to_vec()]).unwrap();
        w.tensor(&Tensor { name: "x".into(), dims: vec![2, 3], ttype: TensorType::F16, data: vec![0; 12] }).unwrap();
        let b = w.finish().unwrap();
        let i32_at = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(&b[0..4], &[0x6c, 0x6d, 0x67, 0x67]); // "lmgg": 0x67676d6c little-endian
        assert_eq!(i32_at(4), 51864);
        assert_eq!(i32_at(44), 1); // ftype
        assert_eq!((i32_at(48), i32_at(52)), (1, 2));
        assert_eq!(f32::from_le_bytes(b[56..60].try_into().unwrap()), 0.5);
        assert_eq!(i32_at(64), 1); // token count
        assert_eq!(i32_at(68), 2);
        assert_eq!(&b[72..74], b"ab");
        let t = 74;
        assert_eq!((i32_at(t), i32_at(t + 4), i32_at(t + 8)), (2, 1, 1));
        assert_eq!((i32_at(t + 12), i32_at(t + 16)), (3, 2), "dims innermost first");
        assert_eq!(&b[t + 20..t + 21], b"x");
        assert_eq!(b.len(), t + 21 + 12);
    }
}
