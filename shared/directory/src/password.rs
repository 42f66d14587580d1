//! The one-time random password a new account gets before it can be enabled. It is generated
//! from the OS CSPRNG, sent once over the encrypted connection, and never stored or logged:
//! the account requires a smartcard, so nobody ever signs in with it.

use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use rand::Rng;

const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const DIGIT: &[u8] = b"23456789";
const SYMBOL: &[u8] = b"!#%+-.:=?@^_~";
const LENGTH: usize = 40;

/// 40 characters with every class AD's complexity rule counts, in random order.
pub fn random() -> String {
    let mut rng = OsRng;
    let all: Vec<u8> = [UPPER, LOWER, DIGIT, SYMBOL].concat();
    let mut chars: Vec<u8> = [UPPER, LOWER, DIGIT, SYMBOL]
        .iter()
        .map(|class| class[rng.gen_range(0..class.len())])
        .collect();
    chars.extend((chars.len()..LENGTH).map(|_| all[rng.gen_range(0..all.len())]));
    chars.shuffle(&mut rng);
    String::from_utf8(chars).expect("ASCII")
}

/// `unicodePwd` wants the password in double quotes, UTF-16LE.
pub fn encode(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_complex_and_different() {
        let a = random();
        assert_eq!(a.len(), LENGTH);
        for class in [UPPER, LOWER, DIGIT, SYMBOL] {
            assert!(a.bytes().any(|b| class.contains(&b)), "{a} lacks a class");
        }
        assert_ne!(a, random());
    }

    #[test]
    fn encodes_quoted_utf16le() {
        assert_eq!(encode("ab"), vec![b'"', 0, b'a', 0, b'b', 0, b'"', 0]);
    }
}
