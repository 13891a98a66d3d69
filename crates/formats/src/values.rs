//! Decoding little-endian tensor bytes into [`Values`]: f16 and bf16 are widened exactly to f32,
//! f32 stays f32, f64 stays f64; and the chunked reading that every value reader goes through
//! ([`ChunkBuf`], [`ChunkValues`], [`ValuesChunk`]).

use std::borrow::Cow;

use super::{Checkpoint, CheckpointError, Dtype, Values};

/// A run of consecutive values of one float tensor, widened like [`Values`] (f32 for f32/f16/bf16,
/// f64 for f64), borrowed from a [`ChunkBuf`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChunkValues<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl<'a> ChunkValues<'a> {
    pub fn len(&self) -> usize {
        match self {
            ChunkValues::F32(v) => v.len(),
            ChunkValues::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f64 (exact).
    pub fn get(&self, i: usize) -> Option<f64> {
        match self {
            ChunkValues::F32(v) => v.get(i).map(|&x| x as f64),
            ChunkValues::F64(v) => v.get(i).copied(),
        }
    }

    /// The values as little-endian bytes of their widened type (borrowed on little-endian targets).
    pub fn le_bytes(&self) -> Cow<'a, [u8]> {
        match *self {
            ChunkValues::F32(v) => {
                if cfg!(target_endian = "little") {
                    // SAFETY: f32 has no padding, u8 has alignment 1, and the byte slice covers exactly
                    // the memory of `v`, borrowed for the same lifetime.
                    Cow::Borrowed(unsafe {
                        std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v))
                    })
                } else {
                    Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            }
            ChunkValues::F64(v) => {
                if cfg!(target_endian = "little") {
                    // SAFETY: as above, for f64.
                    Cow::Borrowed(unsafe {
                        std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v))
                    })
                } else {
                    Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            }
        }
    }

    /// A sub-range of the chunk.
    pub fn slice(&self, r: std::ops::Range<usize>) -> ChunkValues<'a> {
        match *self {
            ChunkValues::F32(v) => ChunkValues::F32(&v[r]),
            ChunkValues::F64(v) => ChunkValues::F64(&v[r]),
        }
    }
}

impl<'a> From<&'a Values> for ChunkValues<'a> {
    fn from(v: &'a Values) -> Self {
        match v {
            Values::F32(v) => ChunkValues::F32(v),
            Values::F64(v) => ChunkValues::F64(v),
        }
    }
}

/// One chunk handed out by [`Checkpoint::read_chunks`]: tensor `index`, elements
/// `start .. start + values.len()`.
#[derive(Clone, Copy, Debug)]
pub struct ValuesChunk<'a> {
    pub index: usize,
    pub start: usize,
    pub values: ChunkValues<'a>,
}

/// A reusable buffer for reading chunks of tensors: the file's bytes (8-byte aligned, so f32 and
/// f64 chunks are used in place on little-endian targets) and, for f16/bf16, the widened f32 values.
/// One per thread; memory is what the largest chunk read through it needs.
#[derive(Debug, Default)]
pub struct ChunkBuf {
    raw: Vec<u64>,
    wide: Vec<f32>,
}

impl ChunkBuf {
    pub fn new() -> ChunkBuf {
        ChunkBuf::default()
    }

    /// Bytes held (for budgets).
    pub fn capacity_bytes(&self) -> usize {
        self.raw.capacity() * 8 + self.wide.capacity() * 4
    }

    /// Reads elements `start .. start + n` of float tensor `index` of `ck` and returns them widened.
    pub fn fill<'a>(
        &'a mut self,
        ck: &Checkpoint,
        index: usize,
        start: usize,
        n: usize,
    ) -> Result<ChunkValues<'a>, CheckpointError> {
        let (dtype, nbytes) = self.read(ck, index, start, n)?;
        Ok(self.widen(dtype, nbytes))
    }

    /// Reads elements `start .. start + n` of float tensor `index` of `ck` as they are stored (little
    /// endian, the tensor's own dtype, 8-byte aligned), without widening them: for callers that widen
    /// a piece at a time with [`widen_into`] while it is in cache.
    pub fn fill_raw(
        &mut self,
        ck: &Checkpoint,
        index: usize,
        start: usize,
        n: usize,
    ) -> Result<(Dtype, &[u8]), CheckpointError> {
        let (dtype, nbytes) = self.read(ck, index, start, n)?;
        Ok((dtype, &as_bytes(&self.raw)[..nbytes]))
    }

    /// Widens `bytes` (whole elements of float `dtype`) through this buffer.
    pub fn decode<'a>(&'a mut self, dtype: Dtype, bytes: &[u8]) -> ChunkValues<'a> {
        self.room(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.widen(dtype, bytes.len())
    }

    /// Reads elements `start .. start + n` of float tensor `index` of `ck`, as stored, into the start of
    /// this buffer: their dtype and byte count.
    fn read(
        &mut self,
        ck: &Checkpoint,
        index: usize,
        start: usize,
        n: usize,
    ) -> Result<(Dtype, usize), CheckpointError> {
        let dtype = ck.float_info(index)?.dtype;
        let es = dtype.size();
        let nbytes = n.checked_mul(es).ok_or_else(|| ck.malformed("chunk size overflows"))?;
        ck.read_at(index, (start as u64) * es as u64, &mut self.room(nbytes)[..nbytes])?;
        Ok((dtype, nbytes))
    }

    /// The buffer as bytes, grown to hold at least `nbytes` (8-byte aligned).
    fn room(&mut self, nbytes: usize) -> &mut [u8] {
        let words = nbytes.div_ceil(8);
        if self.raw.len() < words {
            self.raw.resize(words, 0);
        }
        as_bytes_mut(&mut self.raw)
    }

    fn widen(&mut self, dtype: Dtype, nbytes: usize) -> ChunkValues<'_> {
        let n = nbytes / dtype.size();
        match dtype {
            Dtype::F32 => {
                if cfg!(target_endian = "little") {
                    // SAFETY: `raw` is 8-byte aligned and holds at least `nbytes` initialised bytes;
                    // every bit pattern is a valid f32.
                    ChunkValues::F32(unsafe {
                        std::slice::from_raw_parts(self.raw.as_ptr() as *const f32, n)
                    })
                } else {
                    let b = &as_bytes(&self.raw)[..nbytes];
                    self.wide.clear();
                    self.wide.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                    ChunkValues::F32(&self.wide)
                }
            }
            Dtype::F64 => {
                if cfg!(target_endian = "little") {
                    // SAFETY: as above, for f64 (8-byte alignment).
                    ChunkValues::F64(unsafe {
                        std::slice::from_raw_parts(self.raw.as_ptr() as *const f64, n)
                    })
                } else {
                    for w in self.raw[..n].iter_mut() {
                        *w = u64::from_le(*w);
                    }
                    // SAFETY: as above; the words now hold native-endian f64 bits.
                    ChunkValues::F64(unsafe {
                        std::slice::from_raw_parts(self.raw.as_ptr() as *const f64, n)
                    })
                }
            }
            Dtype::F16 | Dtype::BF16 => {
                let b = &as_bytes(&self.raw)[..nbytes];
                widen_halves(dtype, b, &mut self.wide);
                ChunkValues::F32(&self.wide)
            }
            _ => ChunkValues::F32(&[]),
        }
    }
}

/// Widens whole elements of float `dtype` in little-endian `bytes` (as [`ChunkBuf::fill_raw`] gives
/// them): f32 and f64 borrowed in place when `bytes` is aligned for them (on little-endian targets),
/// else converted into `wide` (f32, for f32/f16/bf16) or `wide64` (f64).
pub fn widen_into<'a>(
    dtype: Dtype,
    bytes: &'a [u8],
    wide: &'a mut Vec<f32>,
    wide64: &'a mut Vec<f64>,
) -> ChunkValues<'a> {
    let n = bytes.len() / dtype.size().max(1);
    let bytes = &bytes[..n * dtype.size()];
    match dtype {
        Dtype::F32 => {
            // SAFETY: every bit pattern is a valid f32; `align_to` only yields a middle part that is
            // properly aligned, and it covers all of `bytes` only when the prefix and suffix are empty.
            let (pre, mid, post) = unsafe { bytes.align_to::<f32>() };
            if cfg!(target_endian = "little") && pre.is_empty() && post.is_empty() {
                return ChunkValues::F32(mid);
            }
            wide.clear();
            wide.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            ChunkValues::F32(wide)
        }
        Dtype::F64 => {
            // SAFETY: as above, for f64.
            let (pre, mid, post) = unsafe { bytes.align_to::<f64>() };
            if cfg!(target_endian = "little") && pre.is_empty() && post.is_empty() {
                return ChunkValues::F64(mid);
            }
            wide64.clear();
            wide64.extend(
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
            );
            ChunkValues::F64(wide64)
        }
        Dtype::F16 | Dtype::BF16 => {
            widen_halves(dtype, bytes, wide);
            ChunkValues::F32(wide)
        }
        _ => ChunkValues::F32(&[]),
    }
}

/// f16 or bf16 little-endian bytes widened exactly into `out` (replacing its contents). bf16 is the
/// top half of an f32, so widening it is a 16-bit shift, in a loop the compiler vectorizes; f16 goes
/// through `half`'s slice conversion (F16C instructions where the CPU has them).
fn widen_halves(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    let n = bytes.len() / 2;
    out.clear();
    // SAFETY: u16 has no invalid bit patterns; the middle part is aligned for u16.
    let (pre, mid, post) = unsafe { bytes.align_to::<u16>() };
    let aligned = cfg!(target_endian = "little") && pre.is_empty() && post.is_empty();
    if dtype == Dtype::BF16 {
        if aligned {
            out.extend(mid.iter().map(|&h| f32::from_bits((h as u32) << 16)));
        } else {
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)),
            );
        }
        return;
    }
    out.resize(n, 0.0);
    if aligned {
        use half::slice::HalfFloatSliceExt;
        // SAFETY: half::f16 is a transparent wrapper of u16 (any bit pattern is an f16).
        let halves: &[half::f16] = unsafe { std::slice::from_raw_parts(mid.as_ptr() as *const half::f16, n) };
        halves.convert_to_f32_slice(out);
    } else {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
        }
    }
}

fn as_bytes(v: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding; the byte view covers exactly `v`'s memory.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn as_bytes_mut(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: as above; any byte pattern written through it is a valid u64.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_is_exact() {
        // 1.0, -2.0, 65504 (f16 max), smallest f16 subnormal.
        let f16s: Vec<u8> =
            [0x3c00u16, 0xc000, 0x7bff, 0x0001].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut b = ChunkBuf::new();
        assert_eq!(b.decode(Dtype::F16, &f16s), ChunkValues::F32(&[1.0, -2.0, 65504.0, 2f32.powi(-24)]));
        let bf: Vec<u8> = [0x3f80u16, 0x7f80, 0xc040].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(b.decode(Dtype::BF16, &bf), ChunkValues::F32(&[1.0, f32::INFINITY, -3.0]));
        let f64s: Vec<u8> = [1.5f64, -0.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(b.decode(Dtype::F64, &f64s), ChunkValues::F64(&[1.5, -0.25]));
        let f32s: Vec<u8> = [7.0f32, 0.5, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let v = b.decode(Dtype::F32, &f32s);
        assert_eq!(v, ChunkValues::F32(&[7.0, 0.5, -1.0]));
        assert_eq!(&*v.le_bytes(), &f32s[..]);
    }

    /// Every f16 and bf16 bit pattern widens to what `half` gives one element at a time (any NaN to a
    /// NaN), through the buffer, through `widen_into`, aligned or not.
    #[test]
    fn slice_widening_equals_elementwise_for_every_pattern() {
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        for dt in [Dtype::F16, Dtype::BF16] {
            let want: Vec<u32> = (0..=u16::MAX)
                .map(|h| match dt {
                    Dtype::F16 => half::f16::from_bits(h).to_f32().to_bits(),
                    _ => half::bf16::from_bits(h).to_f32().to_bits(),
                })
                .collect();
            // NaN as one pattern: a signalling NaN may come back quieted.
            let canon = |x: f32| if x.is_nan() { u32::MAX } else { x.to_bits() };
            let want: Vec<u32> = want.into_iter().map(|b| canon(f32::from_bits(b))).collect();
            let bits = |v: ChunkValues<'_>| match v {
                ChunkValues::F32(v) => v.iter().map(|&x| canon(x)).collect::<Vec<u32>>(),
                ChunkValues::F64(_) => panic!("f64"),
            };
            let mut b = ChunkBuf::new();
            assert_eq!(bits(b.decode(dt, &all)), want);
            let (mut w, mut w64) = (Vec::new(), Vec::new());
            assert_eq!(bits(widen_into(dt, &all, &mut w, &mut w64)), want);
            let mut odd = vec![0u8];
            odd.extend_from_slice(&all);
            assert_eq!(bits(widen_into(dt, &odd[1..], &mut w, &mut w64)), want, "unaligned");
        }
        let f32s: Vec<u8> = [7.0f32, 0.5, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut odd = vec![0u8];
        odd.extend_from_slice(&f32s);
        let (mut w, mut w64) = (Vec::new(), Vec::new());
        assert_eq!(widen_into(Dtype::F32, &odd[1..], &mut w, &mut w64), ChunkValues::F32(&[7.0, 0.5, -1.0]));
    }
}
