//! SHA-256. The `sha2` crate detects SHA-NI (x86-64) and the ARMv8 SHA extensions at
//! run time and uses them when the CPU has them.

use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;
use sha2::{Digest, Sha256};

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

type Block = GenericArray<u8, U64>;

/// Copies `bytes` into the concatenation of `blocks` starting at byte `offset`.
fn write_blocks(blocks: &mut [Block], mut offset: usize, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let block = &mut blocks[offset / BLOCK_LEN];
        let start = offset % BLOCK_LEN;
        let take = bytes.len().min(BLOCK_LEN - start);
        block[start..start + take].copy_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        offset += take;
    }
}

/// SHA-256 of `prefix || parts...`, for the short one-byte-prefixed messages Merkle trees
/// hash by the thousand. It pads the message itself, straight into the blocks, and feeds
/// them to the `sha2` crate's (hardware-accelerated) compression function in one call,
/// skipping the buffering of the streaming API: for messages of two or three blocks that
/// buffering costs a third as much as the compression. Longer messages take the streaming
/// path.
pub fn sha256_prefixed(prefix: u8, parts: &[&[u8]]) -> Hash {
    let message_len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    // The 0x80 terminator and the 64-bit message length in bits follow the message.
    let block_count = (message_len + 9).div_ceil(BLOCK_LEN);
    if block_count > INLINE_BLOCKS {
        let mut hasher = Sha256::new();
        hasher.update([prefix]);
        for part in parts {
            hasher.update(part);
        }
        return hasher.finalize().into();
    }
    let mut blocks = [Block::default(); INLINE_BLOCKS];
    let blocks = &mut blocks[..block_count];
    blocks[0][0] = prefix;
    let mut offset = 1;
    for part in parts {
        write_blocks(blocks, offset, part);
        offset += part.len();
    }
    write_blocks(blocks, offset, &[0x80]);
    blocks[block_count - 1][BLOCK_LEN - 8..].copy_from_slice(&(message_len as u64 * 8).to_be_bytes());
    let mut state = INITIAL_STATE;
    sha2::compress256(&mut state, blocks);
    let mut digest = [0u8; HASH_LEN];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
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
