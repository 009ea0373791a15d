//! G.711 μ-law (8-bit companded PCM, what telephone networks and Twilio Media Streams carry).
//!
//! The classic bias-and-segment formulation (ITU-T G.711); eight lines each way, so it is
//! written here rather than pulled in as a dependency.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// One linear s16 sample → one μ-law byte.
pub fn encode(sample: i16) -> u8 {
    let mut pcm = sample as i32;
    let sign = if pcm < 0 { 0x80 } else { 0 };
    if pcm < 0 {
        pcm = -pcm;
    }
    pcm = pcm.min(CLIP) + BIAS;
    let exponent = (15 - (pcm as u16).leading_zeros() as i32 - 7).max(0);
    let mantissa = (pcm >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// One μ-law byte → one linear s16 sample.
pub fn decode(byte: u8) -> i16 {
    let u = !byte as i32;
    let exponent = (u >> 4) & 0x07;
    let magnitude = (((u & 0x0f) << 3) + BIAS) << exponent;
    (if u & 0x80 != 0 { BIAS - magnitude } else { magnitude - BIAS }) as i16
}

pub fn encode_all(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| encode(s)).collect()
}

pub fn decode_all(bytes: &[u8]) -> Vec<i16> {
    bytes.iter().map(|&b| decode(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_a_round_trip() {
        for b in 0..=255u8 {
            if b == 0x7f {
                continue; // "negative zero": decodes to 0, which encodes as 0xff
            }
            assert_eq!(encode(decode(b)), b, "code {b:#04x} → {}", decode(b));
        }
    }

    #[test]
    fn known_values_and_quantisation_error() {
        assert_eq!(encode(0), 0xff);
        assert_eq!(decode(0xff), 0);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x00), -32124);
        assert_eq!(encode(i16::MIN), 0x00);
        for x in (-32000..32000).step_by(7) {
            let y = decode(encode(x as i16)) as i32;
            // The encoder truncates within a segment whose step is ~1/16 of its magnitude.
            assert!((y - x).abs() <= x.abs() / 16 + 8, "{x} → {y}");
        }
    }
}
