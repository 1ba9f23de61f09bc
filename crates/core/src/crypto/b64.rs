//! Base64 as the original TypeScript service speaks it.
//!
//! Encoding is plain standard-alphabet base64 with `=` padding (what `btoa` produces).
//! Decoding follows the WHATWG "forgiving-base64 decode" algorithm that `atob` uses, so
//! every blob the original accepted is accepted here too:
//! - ASCII whitespace (tab, LF, FF, CR, space) anywhere is ignored;
//! - padding is optional, but when present the padded length must be a multiple of 4;
//! - a symbol count with remainder 1 modulo 4 is rejected;
//! - non-zero bits left over in the last symbol are silently dropped.

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

/// The input is not something `atob` would decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64")]
pub struct Base64Error;

fn is_ascii_whitespace(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

fn symbol_value(b: u8) -> Option<u32> {
    match b {
        b'A'..=b'Z' => Some(u32::from(b - b'A')),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(b - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Forgiving decode (JS `atob` semantics, returning bytes instead of a binary string).
///
/// The output vector is allocated once with its final capacity, so callers that wrap it in
/// a zeroizing container do not leave stale copies behind from reallocation.
pub fn decode_forgiving(input: &str) -> Result<Vec<u8>, Base64Error> {
    // The filtered copy may hold secret material (PEM bodies), so it is wiped on drop.
    let mut data: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(input.len()));
    data.extend(input.bytes().filter(|b| !is_ascii_whitespace(*b)));

    if data.len().is_multiple_of(4) {
        for _ in 0..2 {
            if data.last() == Some(&b'=') {
                data.pop();
            }
        }
    }
    if data.len() % 4 == 1 {
        return Err(Base64Error);
    }

    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &b in data.iter() {
        let v = symbol_value(b).ok_or(Base64Error)?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // Truncation to the low 8 bits is the point: take the next complete byte.
            out.push(((acc >> bits) & 0xff) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    // The accumulator held key bits when decoding secrets.
    acc.zeroize();
    Ok(out)
}

/// Standard base64 with padding, exactly like `btoa` over the bytes.
pub fn encode_standard(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_like_atob() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("", Some(b"")),
            ("aGVsbG8=", Some(b"hello")),
            ("aGVsbG8", Some(b"hello")),
            ("aGVs\nbG8 =", Some(b"hello")),
            (" a G V s b G 8 = \t\r\n", Some(b"hello")),
            ("aGVsbA==", Some(b"hell")),
            ("aGVsbA", Some(b"hell")),
            // non-zero trailing bits are dropped
            ("aGVsbB==", Some(b"hell")),
            ("aGVsbG9=", Some(b"hello")),
            // remainder 1 is rejected
            ("aGVsb", None),
            ("a", None),
            // padding only allowed when the padded length is a multiple of 4
            ("aGVsbA=", None),
            ("aGVsbG8==", None),
            ("aGVs===", None),
            ("aGV=sbG8", None),
            ("====", None),
            // wrong alphabet
            ("aGVs-G8_", None),
            ("!!!not base64!!!", None),
            ("aGVs\u{a0}bG8=", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_forgiving(input).ok().as_deref(),
                *want,
                "input {input:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn round_trips_with_standard_encoding(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let enc = encode_standard(&bytes);
            prop_assert_eq!(decode_forgiving(&enc).unwrap(), bytes.clone());
            let unpadded = enc.trim_end_matches('=');
            prop_assert_eq!(decode_forgiving(unpadded).unwrap(), bytes.clone());
            let spaced: String = enc.chars().flat_map(|c| [c, '\n']).collect();
            prop_assert_eq!(decode_forgiving(&spaced).unwrap(), bytes);
        }

        #[test]
        fn agrees_with_strict_decoder_on_canonical_input(s in "[A-Za-z0-9+/]{0,40}") {
            let strict = base64::engine::general_purpose::STANDARD_NO_PAD.decode(&s).ok();
            let ours = decode_forgiving(&s).ok();
            if let Some(strict) = strict {
                prop_assert_eq!(ours, Some(strict));
            }
            prop_assert_eq!(decode_forgiving(&s).is_err(), s.len() % 4 == 1);
        }
    }
}
