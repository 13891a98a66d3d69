//! TFRecord framing, the container of TensorBoard's event files: each record is its length (u64,
//! little-endian), the masked CRC-32C of those 8 bytes, the payload, and the masked CRC-32C of the
//! payload (both CRCs u32 little-endian). The mask is TensorFlow's: rotate right by 15 bits, add
//! `0xa282ead8`.
//!
//! [`frame`] appends one record to a buffer; [`read_records`] walks a file's bytes and stops at the
//! first record that is cut short or fails a CRC, saying where the good part ends, so a file whose
//! writer was killed mid-record can be cut back to its last whole record and appended to.

/// TensorFlow's CRC mask constant.
const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC-32C (Castagnoli) of `data`, as TFRecord stores it.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Appends one framed record holding `payload` to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u64).to_le_bytes();
    out.reserve(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
}

/// Why reading stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The last record is cut short (a writer killed mid-write): `have` of `need` bytes.
    Truncated { have: usize, need: usize },
    /// A length or payload fails its CRC.
    BadCrc { what: &'static str },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncated { have, need } => {
                write!(f, "last record cut short ({have} of {need} bytes)")
            }
            Damage::BadCrc { what } => write!(f, "a record's {what} fails its CRC-32C"),
        }
    }
}

/// The whole records of a file, in order.
#[derive(Debug)]
pub struct Records<'a> {
    pub payloads: Vec<&'a [u8]>,
    /// Bytes up to the end of the last whole, CRC-checked record.
    pub good_len: usize,
    /// Why reading stopped before `bytes.len()`, if it did.
    pub damage: Option<Damage>,
}

/// Every whole record of `bytes` up to the first damaged one.
pub fn read_records(bytes: &[u8]) -> Records<'_> {
    let mut payloads = Vec::new();
    let mut at = 0usize;
    let damage = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < 12 {
            break Some(Damage::Truncated { have: rest.len(), need: 12 });
        }
        let len_bytes = &rest[..8];
        let crc_len = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if masked_crc(len_bytes) != crc_len {
            break Some(Damage::BadCrc { what: "length" });
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
        let need = usize::try_from(len).ok().and_then(|l| l.checked_add(16));
        let Some(need) = need else { break Some(Damage::BadCrc { what: "length" }) };
        if rest.len() < need {
            break Some(Damage::Truncated { have: rest.len(), need });
        }
        let payload = &rest[12..12 + (need - 16)];
        let tail = &rest[need - 4..need];
        if masked_crc(payload) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
            break Some(Damage::BadCrc { what: "payload" });
        }
        payloads.push(payload);
        at += need;
    };
    Records { payloads, good_len: at, damage }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value (RFC 3720, B.4): crc32c("123456789") = 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // TensorBoard's own `masked_crc32c` (tensorboard.compat.tensorflow_stub) of the same bytes.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc(b""), 0xA282_EAD8);
    }

    #[test]
    fn records_round_trip_and_a_cut_tail_is_reported() {
        let mut buf = Vec::new();
        for p in [&b"first"[..], b"", b"third record"] {
            frame(&mut buf, p);
        }
        let r = read_records(&buf);
        assert_eq!(r.payloads, vec![&b"first"[..], b"", b"third record"]);
        assert_eq!((r.good_len, r.damage), (buf.len(), None));
        let whole = buf.len();
        frame(&mut buf, b"cut short");
        for cut in [whole + 3, whole + 12, buf.len() - 1] {
            let r = read_records(&buf[..cut]);
            assert_eq!(r.payloads.len(), 3);
            assert_eq!(r.good_len, whole);
            assert!(matches!(r.damage, Some(Damage::Truncated { .. })), "{:?}", r.damage);
        }
        let mut bad = buf.clone();
        let last = bad.len() - 6;
        bad[last] ^= 1;
        let r = read_records(&bad);
        assert_eq!((r.payloads.len(), r.damage), (3, Some(Damage::BadCrc { what: "payload" })));
    }
}
