//! SHA-256. The `sha2` crate detects SHA-NI (x86-64) and the ARMv8 SHA extensions at
//! run time and uses them when the CPU has them.

use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;
use sha2::{Digest, Sha256};

use crate::sha256x2;

/// Length of every hash in medledger.
pub const HASH_LEN: usize = 32;

/// A SHA-256 digest.
pub type Hash = [u8; HASH_LEN];

/// Lower-case hex of `bytes`, for messages and debug output.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// SHA-256 of the concatenation of `parts`, without building the concatenation.
pub fn sha256_parts(parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// SHA-256 initial state (FIPS 180-4 §5.3.3).
const INITIAL_STATE: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
const BLOCK_LEN: usize = 64;
/// Messages up to this many blocks (after padding) are hashed from a stack buffer.
const INLINE_BLOCKS: usize = 4;

/// A message padded for SHA-256, in a stack buffer: `len` bytes of whole blocks.
struct Padded {
    buffer: [u8; INLINE_BLOCKS * BLOCK_LEN],
    len: usize,
}

/// Pads `prefix || parts...` (FIPS 180-4 §5.1.1) if it fits in `INLINE_BLOCKS` blocks.
fn pad(prefix: u8, parts: &[&[u8]]) -> Option<Padded> {
    let message_len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    // The 0x80 terminator and the 64-bit message length in bits follow the message.
    let len = (message_len + 9).div_ceil(BLOCK_LEN) * BLOCK_LEN;
    if len > INLINE_BLOCKS * BLOCK_LEN {
        return None;
    }
    let mut buffer = [0u8; INLINE_BLOCKS * BLOCK_LEN];
    buffer[0] = prefix;
    let mut offset = 1;
    for part in parts {
        buffer[offset..offset + part.len()].copy_from_slice(part);
        offset += part.len();
    }
    buffer[offset] = 0x80;
    buffer[len - 8..len].copy_from_slice(&(message_len as u64 * 8).to_be_bytes());
    Some(Padded { buffer, len })
}

fn digest_of(state: [u32; 8]) -> Hash {
    let mut digest = [0u8; HASH_LEN];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

fn streaming(prefix: u8, parts: &[&[u8]]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([prefix]);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// SHA-256 of `prefix || parts...`, for the short one-byte-prefixed messages Merkle trees
/// hash by the thousand. It pads the message itself and feeds whole blocks to the `sha2`
/// crate's (hardware-accelerated) compression function, skipping the buffering of the
/// streaming API: for messages of two or three blocks that buffering costs a third as
/// much as the compression. Longer messages take the streaming path.
pub fn sha256_prefixed(prefix: u8, parts: &[&[u8]]) -> Hash {
    let Some(padded) = pad(prefix, parts) else {
        return streaming(prefix, parts);
    };
    let mut state = INITIAL_STATE;
    for block in padded.buffer[..padded.len].chunks_exact(BLOCK_LEN) {
        sha2::compress256(
            &mut state,
            std::slice::from_ref(GenericArray::<u8, U64>::from_slice(block)),
        );
    }
    digest_of(state)
}

/// Two independent `sha256_prefixed` hashes, computed together (interleaved SHA-NI) when
/// the CPU allows it and both messages pad to the same number of blocks.
pub fn sha256_prefixed_pair(prefix: u8, a: &[&[u8]], b: &[&[u8]]) -> (Hash, Hash) {
    if sha256x2::available() {
        if let (Some(a_padded), Some(b_padded)) = (pad(prefix, a), pad(prefix, b)) {
            if a_padded.len == b_padded.len {
                let (mut a_state, mut b_state) = (INITIAL_STATE, INITIAL_STATE);
                sha256x2::compress2(
                    &mut a_state,
                    &a_padded.buffer[..a_padded.len],
                    &mut b_state,
                    &b_padded.buffer[..b_padded.len],
                );
                return (digest_of(a_state), digest_of(b_state));
            }
        }
    }
    (sha256_prefixed(prefix, a), sha256_prefixed(prefix, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_hash_equals_the_streaming_hash_for_every_length() {
        // Covers every padding case: lengths on both sides of each block boundary and
        // past the inline buffer.
        for len in 0usize..400 {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for prefix in [0u8, 1, 0xff] {
                let expected = sha256_parts(&[&[prefix], &data]);
                assert_eq!(sha256_prefixed(prefix, &[&data]), expected, "len {len}");
                let (left, right) = data.split_at(len / 3);
                assert_eq!(
                    sha256_prefixed(prefix, &[left, right]),
                    expected,
                    "len {len} split"
                );
            }
        }
    }

    #[test]
    fn sha256_matches_fips_180_known_answers() {
        assert_eq!(
            hex::encode(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sha256_parts_equals_hash_of_concatenation() {
        assert_eq!(sha256_parts(&[b"ab", b"", b"c"]), sha256(b"abc"));
    }
}
