//! CTranslate2 Whisper variables → whisper.cpp (OpenAI checkpoint) tensor names, shapes and types.
//!
//! * fused self-attention `linear_0` [3d, d] → `attn.query/key/value` (row thirds; the key
//!   has no bias in Whisper, so CT2's all-zero middle third of the bias is dropped);
//! * cross-attention `linear_0` → `cross_attn.query`, `linear_1` [2d, d] → `cross_attn.key/value`
//!   (halves; key bias dropped), `linear_2` → `cross_attn.out`; self-attention's last linear →
//!   `attn.out`;
//! * `layer_norm/{gamma,beta}` → `*_ln.{weight,bias}`; ffn `linear_0/1` → `mlp.0/2`;
//! * no transposes (both store `[out, in]` row-major).
//!
//! whisper.cpp checks types: 1-D tensors, both positional embeddings and the conv biases
//! (written 2-D as `[384, 1]`, i.e. ggml `[1, 384]`) are f32; everything else is f16.

use crate::ct2::{Ct2Model, Variable};
use crate::ggml::{HParams, Tensor, TensorType};
use anyhow::{ensure, Context, Result};
use std::collections::BTreeSet;

/// The converted model: hyper-parameters and tensors in OpenAI checkpoint order.
pub struct Converted {
    pub hparams: HParams,
    pub tensors: Vec<Tensor>,
    /// CT2 variables that were not used (scalars/flags such as `decoder/pre_norm`).
    pub unused: Vec<String>,
}

struct Builder<'a> {
    model: &'a Ct2Model,
    used: BTreeSet<String>,
    tensors: Vec<Tensor>,
}

impl<'a> Builder<'a> {
    fn var(&mut self, name: &str) -> Result<&'a Variable> {
        self.used.insert(name.to_string());
        self.model.get(name)
    }

    /// Emit `v` (or a row slice of it) under `name` with whisper.cpp's expected type.
    fn emit(&mut self, name: String, v: &Variable, part: Option<(usize, usize)>, force_f32: bool) -> Result<()> {
        let mut dims = v.dims.clone();
        let sliced;
        let src: &Variable = match part {
            None => v,
            Some((index, parts)) => {
                ensure!(
                    !dims.is_empty() && dims[0] % parts == 0,
                    "{}: cannot split shape {dims:?} into {parts} parts",
                    v.name
                );
                dims[0] /= parts;
                let row_bytes = v.data.len() / parts;
                sliced = Variable {
                    name: v.name.clone(),
                    dims: dims.clone(),
                    dtype: v.dtype,
                    data: v.data[index * row_bytes..(index + 1) * row_bytes].to_vec(),
                };
                &sliced
            }
        };
        let f32_out = force_f32 || dims.len() == 1;
        let data = if f32_out {
            src.to_f32()?.iter().flat_map(|x| x.to_le_bytes()).collect()
        } else {
            src.to_f16_bytes()?
        };
        let ttype = if f32_out { TensorType::F32 } else { TensorType::F16 };
        self.tensors.push(Tensor { name, dims, ttype, data });
        Ok(())
    }

    fn plain(&mut self, ct2: &str, ggml: &str) -> Result<()> {
        let v = self.var(ct2)?;
        self.emit(ggml.to_string(), v, None, false)
    }

    fn layer_norm(&mut self, ct2: &str, ggml: &str) -> Result<()> {
        self.plain(&format!("{ct2}/gamma"), &format!("{ggml}.weight"))?;
        self.plain(&format!("{ct2}/beta"), &format!("{ggml}.bias"))
    }

    fn linear(&mut self, ct2: &str, ggml: &str) -> Result<()> {
        self.plain(&format!("{ct2}/weight"), &format!("{ggml}.weight"))?;
        self.plain(&format!("{ct2}/bias"), &format!("{ggml}.bias"))
    }

    /// Split a fused projection into `names` (row blocks); the bias of a `None`-marked part
    /// ("key") is dropped after checking it is zero.
    fn fused(&mut self, ct2: &str, ggml: &str, names: &[&str], key_index: usize) -> Result<()> {
        let w = self.var(&format!("{ct2}/weight"))?;
        let b = self.var(&format!("{ct2}/bias"))?;
        let n = names.len();
        for (i, part) in names.iter().enumerate() {
            self.emit(format!("{ggml}.{part}.weight"), w, Some((i, n)), false)?;
            if i == key_index {
                let bias = b.to_f32()?;
                let d = bias.len() / n;
                let max = bias[i * d..(i + 1) * d].iter().fold(0f32, |m, x| m.max(x.abs()));
                if max > 1e-6 {
                    eprintln!("whisper-convert: warning: {ct2} key bias is not zero (max |b| = {max}); whisper has none, dropping it");
                }
            } else {
                self.emit(format!("{ggml}.{part}.bias"), b, Some((i, n)), false)?;
            }
        }
        Ok(())
    }

    fn mlp(&mut self, ct2_layer: &str, ggml_block: &str) -> Result<()> {
        self.linear(&format!("{ct2_layer}/ffn/linear_0"), &format!("{ggml_block}.mlp.0"))?;
        self.linear(&format!("{ct2_layer}/ffn/linear_1"), &format!("{ggml_block}.mlp.2"))?;
        self.layer_norm(&format!("{ct2_layer}/ffn/layer_norm"), &format!("{ggml_block}.mlp_ln"))
    }

    fn self_attention(&mut self, ct2_layer: &str, ggml_block: &str) -> Result<()> {
        let a = format!("{ct2_layer}/self_attention");
        self.fused(&format!("{a}/linear_0"), &format!("{ggml_block}.attn"), &["query", "key", "value"], 1)?;
        self.linear(&format!("{a}/linear_1"), &format!("{ggml_block}.attn.out"))?;
        self.layer_norm(&format!("{a}/layer_norm"), &format!("{ggml_block}.attn_ln"))
    }
}

/// Number of `layer_N/` blocks under `prefix` ("encoder" or "decoder").
pub fn count_layers(model: &Ct2Model, prefix: &str) -> usize {
    let re = regex::Regex::new(&format!(r"^{prefix}/layer_(\d+)/")).expect("valid regex");
    model
        .variables
        .keys()
        .filter_map(|k| re.captures(k).and_then(|c| c[1].parse::<usize>().ok()))
        .max()
        .map_or(0, |m| m + 1)
}

pub fn convert(model: &Ct2Model) -> Result<Converted> {
    ensure!(
        model.spec == "WhisperSpec",
        "the CTranslate2 model is a {}, not a WhisperSpec",
        model.spec
    );
    let mut b = Builder { model, used: BTreeSet::new(), tensors: vec![] };
    let n_audio_layer = count_layers(model, "encoder");
    let n_text_layer = count_layers(model, "decoder");
    ensure!(n_audio_layer > 0 && n_text_layer > 0, "no encoder/decoder layers found");

    // Encoder.
    let conv1 = b.var("encoder/conv1/weight")?;
    ensure!(conv1.dims.len() == 3, "encoder/conv1/weight has shape {:?}, expected [state, mels, 3]", conv1.dims);
    let (n_audio_state, n_mels) = (conv1.dims[0], conv1.dims[1]);
    b.emit("encoder.conv1.weight".into(), conv1, None, false)?;
    for conv in ["conv1", "conv2"] {
        if conv == "conv2" {
            b.plain("encoder/conv2/weight", "encoder.conv2.weight")?;
        }
        let bias = b.var(&format!("encoder/{conv}/bias"))?;
        let as_column = Variable { dims: vec![bias.dims[0], 1], ..bias.clone() };
        b.emit(format!("encoder.{conv}.bias"), &as_column, None, true)?;
    }
    let pos = b.var("encoder/position_encodings/encodings")?;
    let n_audio_ctx = pos.dims[0];
    b.emit("encoder.positional_embedding".into(), pos, None, true)?;
    for i in 0..n_audio_layer {
        let l = format!("encoder/layer_{i}");
        let g = format!("encoder.blocks.{i}");
        b.self_attention(&l, &g)?;
        b.mlp(&l, &g)?;
    }
    b.layer_norm("encoder/layer_norm", "encoder.ln_post")?;

    // Decoder.
    let emb = b.var("decoder/embeddings/weight")?;
    let (n_vocab, n_text_state) = (emb.dims[0], emb.dims[1]);
    b.emit("decoder.token_embedding.weight".into(), emb, None, false)?;
    let pos = b.var("decoder/position_encodings/encodings")?;
    let n_text_ctx = pos.dims[0];
    b.emit("decoder.positional_embedding".into(), pos, None, true)?;
    for i in 0..n_text_layer {
        let l = format!("decoder/layer_{i}");
        let g = format!("decoder.blocks.{i}");
        b.self_attention(&l, &g)?;
        b.linear(&format!("{l}/attention/linear_0"), &format!("{g}.cross_attn.query"))?;
        b.fused(&format!("{l}/attention/linear_1"), &format!("{g}.cross_attn"), &["key", "value"], 0)?;
        b.linear(&format!("{l}/attention/linear_2"), &format!("{g}.cross_attn.out"))?;
        b.layer_norm(&format!("{l}/attention/layer_norm"), &format!("{g}.cross_attn_ln"))?;
        b.mlp(&l, &g)?;
    }
    b.layer_norm("decoder/layer_norm", "decoder.ln")?;

    let heads = |name: &str| -> Result<i32> {
        Ok(model.get(name).and_then(|v| v.scalar_int()).with_context(|| format!("reading {name}"))? as i32)
    };
    let hparams = HParams {
        n_vocab: n_vocab as i32,
        n_audio_ctx: n_audio_ctx as i32,
        n_audio_state: n_audio_state as i32,
        n_audio_head: heads("encoder/num_heads")?,
        n_audio_layer: n_audio_layer as i32,
        n_text_ctx: n_text_ctx as i32,
        n_text_state: n_text_state as i32,
        n_text_head: heads("decoder/num_heads")?,
        n_text_layer: n_text_layer as i32,
        n_mels: n_mels as i32,
        ftype: 1,
    };
    let unused = model.variables.keys().filter(|k| !b.used.contains(*k)).cloned().collect::<Vec<_>>();
    for name in &unused {
        let v = &model.variables[name];
        ensure!(
            v.dims.is_empty(),
            "CTranslate2 tensor {name} {:?} has no ggml counterpart (unexpected model layout)",
            v.dims
        );
    }
    Ok(Converted { hparams, tensors: b.tensors, unused })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ct2::DType;
    use std::collections::BTreeMap;

    /// A tiny Whisper-shaped CT2 model (state d, 1 layer each side, vocab v) whose values
    /// encode their position, so splits can be checked.
    pub fn tiny_model(d: usize, v: usize) -> Ct2Model {
        let mut vars = BTreeMap::new();
        let mut add = |name: &str, dims: &[usize]| {
            let n: usize = dims.iter().product();
            let data = (0..n).flat_map(|i| half::f16::from_f32(i as f32).to_le_bytes()).collect();
            vars.insert(name.to_string(), Variable { name: name.into(), dims: dims.to_vec(), dtype: DType::F16, data });
        };
        add("encoder/conv1/weight", &[d, 4, 3]);
        add("encoder/conv1/bias", &[d]);
        add("encoder/conv2/weight", &[d, d, 3]);
        add("encoder/conv2/bias", &[d]);
        add("encoder/position_encodings/encodings", &[6, d]);
        add("decoder/position_encodings/encodings", &[5, d]);
        add("decoder/embeddings/weight", &[v, d]);
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            add(&format!("{l}/self_attention/linear_0/weight"), &[3 * d, d]);
            add(&format!("{l}/self_attention/linear_0/bias"), &[3 * d]);
            add(&format!("{l}/self_attention/linear_1/weight"), &[d, d]);
            add(&format!("{l}/self_attention/linear_1/bias"), &[d]);
            add(&format!("{l}/ffn/linear_0/weight"), &[4 * d, d]);
            add(&format!("{l}/ffn/linear_0/bias"), &[4 * d]);
            add(&format!("{l}/ffn/linear_1/weight"), &[d, 4 * d]);
            add(&format!("{l}/ffn/linear_1/bias"), &[d]);
            for ln in ["self_attention", "ffn"] {
                add(&format!("{l}/{ln}/layer_norm/gamma"), &[d]);
                add(&format!("{l}/{ln}/layer_norm/beta"), &[d]);
            }
            add(&format!("{side}/layer_norm/gamma"), &[d]);
            add(&format!("{side}/layer_norm/beta"), &[d]);
        }
        let l = "decoder/layer_0/attention";
        add(&format!("{l}/linear_0/weight"), &[d, d]);
        add(&format!("{l}/linear_0/bias"), &[d]);
        add(&format!("{l}/linear_1/weight"), &[2 * d, d]);
        add(&format!("{l}/linear_1/bias"), &[2 * d]);
        add(&format!("{l}/linear_2/weight"), &[d, d]);
        add(&format!("{l}/linear_2/bias"), &[d]);
        add(&format!("{l}/layer_norm/gamma"), &[d]);
        add(&format!("{l}/layer_norm/beta"), &[d]);
        for (name, value) in [("encoder/num_heads", 2i16), ("decoder/num_heads", 2)] {
            vars.insert(name.into(), Variable { name: name.into(), dims: vec![], dtype: DType::I16, data: value.to_le_bytes().to_vec() });
        }
        vars.insert("decoder/pre_norm".into(), Variable { name: "decoder/pre_norm".into(), dims: vec![], dtype: DType::I8, data: vec![1] });
        Ct2Model { version: 6, spec: "WhisperSpec".into(), revision: 3, variables: vars, aliases: vec![] }
    }

    fn tensor<'a>(c: &'a Converted, name: &str) -> &'a Tensor {
        c.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("{name} missing"))
    }

    fn f16_values(t: &Tensor) -> Vec<f32> {
        assert_eq!(t.ttype, TensorType::F16, "{}", t.name);
        t.data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    }

    fn f32_values(t: &Tensor) -> Vec<f32> {
        assert_eq!(t.ttype, TensorType::F32, "{}", t.name);
        t.data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn hparams_come_from_shapes_and_scalars() {
        let c = convert(&tiny_model(8, 10)).unwrap();
        let hp = c.hparams;
        assert_eq!(
            hp.to_array(),
            [10, 6, 8, 2, 1, 5, 8, 2, 1, 4, 1],
            "n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype"
        );
        assert_eq!(c.unused, vec!["decoder/num_heads", "decoder/pre_norm", "encoder/num_heads"]);
    }

    #[test]
    fn tensor_count_matches_whisper_cpp_for_n_layers() {
        // 167 for tiny (4+4 layers): 7 + 15 per encoder layer + 4 + 24 per decoder layer.
        let c = convert(&tiny_model(8, 10)).unwrap();
        assert_eq!(c.tensors.len(), 7 + 15 + 4 + 24);
        let names: BTreeSet<_> = c.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), c.tensors.len(), "names are unique");
        assert!(!names.contains("encoder.blocks.0.attn.key.bias"));
        assert!(!names.contains("decoder.blocks.0.cross_attn.key.bias"));
    }

    #[test]
    fn fused_qkv_splits_by_row_thirds_and_halves() {
        let d = 8;
        let c = convert(&tiny_model(d, 10)).unwrap();
        let q = tensor(&c, "encoder.blocks.0.attn.query.weight");
        let k = tensor(&c, "encoder.blocks.0.attn.key.weight");
        let v = tensor(&c, "encoder.blocks.0.attn.value.weight");
        assert_eq!(q.dims, vec![d, d]);
        assert_eq!(f16_values(q)[0], 0.0);
        assert_eq!(f16_values(k)[0], (d * d) as f32);
        assert_eq!(f16_values(v)[0], (2 * d * d) as f32);
        assert_eq!(f32_values(tensor(&c, "encoder.blocks.0.attn.value.bias"))[0], (2 * d) as f32);
        let ck = tensor(&c, "decoder.blocks.0.cross_attn.key.weight");
        let cv = tensor(&c, "decoder.blocks.0.cross_attn.value.weight");
        assert_eq!(f16_values(ck)[0], 0.0);
        assert_eq!(f16_values(cv)[0], (d * d) as f32);
        assert_eq!(f32_values(tensor(&c, "decoder.blocks.0.cross_attn.value.bias"))[0], d as f32);
    }

    #[test]
    fn types_follow_whisper_cpp_rules() {
        let c = convert(&tiny_model(8, 10)).unwrap();
        for t in &c.tensors {
            let must_f32 = t.dims.len() == 1 || t.name.contains("positional_embedding") || t.name.ends_with("conv1.bias") || t.name.ends_with("conv2.bias");
            let want = if must_f32 { TensorType::F32 } else { TensorType::F16 };
            assert_eq!(t.ttype, want, "{}", t.name);
        }
        assert_eq!(tensor(&c, "encoder.conv1.bias").dims, vec![8, 1]);
        assert_eq!(tensor(&c, "decoder.ln.weight").ttype, TensorType::F32);
        assert_eq!(tensor(&c, "decoder.blocks.0.mlp.2.weight").dims, vec![8, 32], "no transpose");
    }

    #[test]
    fn rejects_other_specs_and_missing_tensors() {
        let mut m = tiny_model(8, 10);
        m.spec = "TransformerSpec".into();
        assert!(convert(&m).is_err());
        let mut m = tiny_model(8, 10);
        m.variables.remove("decoder/layer_0/attention/linear_2/bias");
        let e = format!("{:#}", convert(&m).err().unwrap());
        assert!(e.contains("linear_2/bias"), "{e}");
    }
}
