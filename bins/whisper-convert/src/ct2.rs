//! Reader for CTranslate2's `model.bin` (binary format version 6, as written by
//! `ct2-transformers-converter`).
//!
//! Layout (little-endian): `u32 version`, `spec name` (string), `u32 revision`, `u32 count`,
//! then `count` variables, each: `name` (string), `u8 rank`, `rank × u32 dims`, `u8 dtype`,
//! `u32 byte count`, data. Then `u32 alias count` and (alias, target) string pairs, which we
//! keep but do not need. A string is `u16 length` (including a trailing NUL) + bytes.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;

/// CTranslate2 `DataType` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_code(code: u8) -> Result<Self> {
        Ok(match code {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            other => bail!("unknown CTranslate2 dtype code {other} (expected 0..=5)"),
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One named tensor (or scalar, rank 0) of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    /// Outermost first (row-major, as in PyTorch).
    pub dims: Vec<usize>,
    pub dtype: DType,
    pub data: Vec<u8>,
}

impl Variable {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// The values as f32 (f16/bf16/f32 tensors only).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let d = &self.data;
        Ok(match self.dtype {
            DType::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => bail!("{}: expected a float tensor, found {other:?}", self.name),
        })
    }

    /// The values as little-endian f16 bytes (converting from f32/bf16 if needed).
    pub fn to_f16_bytes(&self) -> Result<Vec<u8>> {
        if self.dtype == DType::F16 {
            return Ok(self.data.clone());
        }
        Ok(self.to_f32()?.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect())
    }

    /// An integer scalar (e.g. `encoder/num_heads`).
    pub fn scalar_int(&self) -> Result<i64> {
        ensure!(self.len() == 1, "{}: expected a scalar, found shape {:?}", self.name, self.dims);
        let d = &self.data;
        Ok(match self.dtype {
            DType::I8 => d[0] as i8 as i64,
            DType::I16 => i16::from_le_bytes([d[0], d[1]]) as i64,
            DType::I32 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            other => bail!("{}: expected an integer scalar, found {other:?}", self.name),
        })
    }
}

#[derive(Debug, Clone)]
#[allow(dead_code)] // version/revision/aliases: kept for diagnostics and the tests
pub struct Ct2Model {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: BTreeMap<String, Variable>,
    pub aliases: Vec<(String, String)>,
}

impl Ct2Model {
    pub fn get(&self, name: &str) -> Result<&Variable> {
        self.variables
            .get(name)
            .with_context(|| format!("variable {name} not found in the CTranslate2 model (is it a Whisper model?)"))
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        ensure!(
            self.data.len() - self.pos >= n,
            "truncated CTranslate2 model: need {n} bytes for {what} at offset {}, only {} left",
            self.pos,
            self.data.len() - self.pos
        );
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u16(what)? as usize;
        let b = self.take(n, what)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec()).with_context(|| format!("{what} at offset {} is not UTF-8", self.pos))
    }
}

/// Parse a whole `model.bin`.
pub fn parse(data: &[u8]) -> Result<Ct2Model> {
    let mut c = Cursor { data, pos: 0 };
    let version = c.u32("format version")?;
    ensure!(
        (5..=6).contains(&version),
        "unsupported CTranslate2 model format version {version} (this converter reads versions 5 and 6)"
    );
    let spec = c.string("spec name")?;
    let revision = c.u32("spec revision")?;
    let count = c.u32("variable count")? as usize;
    let mut variables = BTreeMap::new();
    for i in 0..count {
        let name = c.string("variable name")?;
        let rank = c.u8("rank")? as usize;
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            dims.push(c.u32("dimension")? as usize);
        }
        let dtype = DType::from_code(c.u8("dtype")?).with_context(|| format!("variable {i} ({name})"))?;
        let nbytes = c.u32("byte count")? as usize;
        let expect = dims.iter().product::<usize>() * dtype.size();
        ensure!(nbytes == expect, "variable {name}: {nbytes} bytes for shape {dims:?} of {dtype:?} (expected {expect})");
        let data = c.take(nbytes, &name)?.to_vec();
        variables.insert(name.clone(), Variable { name, dims, dtype, data });
    }
    let mut aliases = vec![];
    if c.pos < data.len() {
        let n = c.u32("alias count")?;
        for _ in 0..n {
            let alias = c.string("alias")?;
            let target = c.string("alias target")?;
            aliases.push((alias, target));
        }
    }
    Ok(Ct2Model { version, spec, revision, variables, aliases })
}

/// Serialise a model in the same format (used by the tests to build small models).
#[cfg(test)]
pub fn write(model: &Ct2Model) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut out = vec![];
    out.extend_from_slice(&model.version.to_le_bytes());
    string(&mut out, &model.spec);
    out.extend_from_slice(&model.revision.to_le_bytes());
    out.extend_from_slice(&(model.variables.len() as u32).to_le_bytes());
    for v in model.variables.values() {
        string(&mut out, &v.name);
        out.push(v.dims.len() as u8);
        for d in &v.dims {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        let code = match v.dtype {
            DType::F32 => 0u8,
            DType::I8 => 1,
            DType::I16 => 2,
            DType::I32 => 3,
            DType::F16 => 4,
            DType::BF16 => 5,
        };
        out.push(code);
        out.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&v.data);
    }
    out.extend_from_slice(&(model.aliases.len() as u32).to_le_bytes());
    for (a, t) in &model.aliases {
        string(&mut out, a);
        string(&mut out, t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_var(name: &str, dims: &[usize], values: &[f32]) -> Variable {
        Variable {
            name: name.into(),
            dims: dims.to_vec(),
            dtype: DType::F16,
            data: values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        }
    }

    fn sample() -> Ct2Model {
        let mut variables = BTreeMap::new();
        for v in [
            f16_var("encoder/conv1/bias", &[3], &[1.0, -2.0, 0.5]),
            Variable { name: "encoder/num_heads".into(), dims: vec![], dtype: DType::I16, data: 6i16.to_le_bytes().to_vec() },
            Variable { name: "decoder/pre_norm".into(), dims: vec![], dtype: DType::I8, data: vec![1] },
        ] {
            variables.insert(v.name.clone(), v);
        }
        Ct2Model {
            version: 6,
            spec: "WhisperSpec".into(),
            revision: 3,
            variables,
            aliases: vec![("decoder/projection/weight".into(), "decoder/embeddings/weight".into())],
        }
    }

    #[test]
    fn round_trips_variables_scalars_and_aliases() {
        let bytes = write(&sample());
        let m = parse(&bytes).unwrap();
        assert_eq!(m.version, 6);
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.revision, 3);
        assert_eq!(m.variables.len(), 3);
        assert_eq!(m.get("encoder/conv1/bias").unwrap().to_f32().unwrap(), vec![1.0, -2.0, 0.5]);
        assert_eq!(m.get("encoder/num_heads").unwrap().scalar_int().unwrap(), 6);
        assert_eq!(m.get("decoder/pre_norm").unwrap().scalar_int().unwrap(), 1);
        assert_eq!(m.aliases[0].1, "decoder/embeddings/weight");
    }

    #[test]
    fn reads_the_documented_byte_layout() {
        // Hand-assembled: version 6, spec "S", revision 1, one f16 [2] variable "a".
        let mut b = vec![];
        b.extend_from_slice(&6u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(b"S\0");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(b"a\0");
        b.push(1); // rank
        b.extend_from_slice(&2u32.to_le_bytes());
        b.push(4); // f16
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&half::f16::from_f32(1.5).to_le_bytes());
        b.extend_from_slice(&half::f16::from_f32(-3.0).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // no aliases
        let m = parse(&b).unwrap();
        let a = m.get("a").unwrap();
        assert_eq!(a.dims, vec![2]);
        assert_eq!(a.dtype, DType::F16);
        assert_eq!(a.to_f32().unwrap(), vec![1.5, -3.0]);
    }

    #[test]
    fn rejects_truncation_bad_sizes_and_versions_with_clear_errors() {
        let bytes = write(&sample());
        for cut in [3, 10, bytes.len() - 7] {
            let e = parse(&bytes[..cut]).unwrap_err().to_string();
            assert!(e.contains("truncated") || e.contains("alias"), "{e}");
        }
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert!(parse(&v1).unwrap_err().to_string().contains("version 1"));
        let mut m = sample();
        m.variables.get_mut("encoder/conv1/bias").unwrap().data.pop();
        let e = parse(&write(&m)).unwrap_err().to_string();
        assert!(e.contains("expected 6"), "{e}");
    }
}
