//! Decoding little-endian tensor bytes into [`Values`]: f16 and bf16 are widened exactly to f32,
//! f32 stays f32, f64 stays f64.

use super::{Dtype, Values};

/// Decode `bytes` (little-endian, `dtype` elements) into values; `None` for non-float dtypes or a
/// length that is not a whole number of elements.
pub(crate) fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Values> {
    if !bytes.len().is_multiple_of(dtype.size()) {
        return None;
    }
    let mut out = with_capacity(dtype, bytes.len() / dtype.size())?;
    append(dtype, bytes, &mut out);
    Some(out)
}

/// An empty [`Values`] of the kind `dtype` decodes to, with room for `n` elements.
pub(crate) fn with_capacity(dtype: Dtype, n: usize) -> Option<Values> {
    match dtype {
        Dtype::F64 => Some(Values::F64(Vec::with_capacity(n))),
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Some(Values::F32(Vec::with_capacity(n))),
        _ => None,
    }
}

/// Decode `bytes` (whole elements of `dtype`) and append them to `out` (from [`with_capacity`]).
/// Lets a reader decode chunk by chunk, so a tensor's bytes and its values are never both held.
pub(crate) fn append(dtype: Dtype, bytes: &[u8], out: &mut Values) {
    match (dtype, out) {
        (Dtype::F32, Values::F32(v)) => {
            v.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        }
        (Dtype::F64, Values::F64(v)) => v.extend(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
        ),
        (Dtype::F16, Values::F32(v)) => v.extend(
            bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        ),
        (Dtype::BF16, Values::F32(v)) => v.extend(
            bytes.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_is_exact() {
        // 1.0, -2.0, 65504 (f16 max), smallest f16 subnormal.
        let f16s: Vec<u8> =
            [0x3c00u16, 0xc000, 0x7bff, 0x0001].iter().flat_map(|v| v.to_le_bytes()).collect();
        let Some(Values::F32(v)) = decode(Dtype::F16, &f16s) else { panic!() };
        assert_eq!(v, vec![1.0, -2.0, 65504.0, 2f32.powi(-24)]);
        let bf: Vec<u8> = [0x3f80u16, 0x7f80, 0xc040].iter().flat_map(|v| v.to_le_bytes()).collect();
        let Some(Values::F32(v)) = decode(Dtype::BF16, &bf) else { panic!() };
        assert_eq!(v, vec![1.0, f32::INFINITY, -3.0]);
        assert!(decode(Dtype::I64, &[0; 8]).is_none());
        assert!(decode(Dtype::F32, &[0; 3]).is_none());
    }
}
