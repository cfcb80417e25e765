//! Two SHA-256 compressions at once with the x86-64 SHA extensions.
//!
//! A single SHA-256 message is one long dependency chain: each `sha256rnds2` waits for
//! the previous one, so one message uses a fraction of the CPU's SHA throughput. Merkle
//! trees hash thousands of independent short messages; running two of them through the
//! same instruction stream lets the CPU overlap the two chains. The code is the `sha2`
//! crate's SHA-NI compression (src/sha256/x86.rs) with every step done for two states;
//! tests check it against the `sha2` crate for one to four blocks over many inputs, and the
//! Merkle tests check whole trees against RFC 6962 vectors and pymerkle. Without the SHA
//! extensions callers fall back to one message at a time.
#![allow(unsafe_code)]
#![allow(clippy::cast_possible_wrap)]
// The round constants are written as FIPS 180-4 prints them.
#![allow(clippy::unreadable_literal)]
// Every pointer cast to `__m128i` is only read or written with the unaligned
// `_mm_loadu_si128` / `_mm_storeu_si128`, so the alignment of the source does not matter.
#![allow(clippy::cast_ptr_alignment)]

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi32, _mm_set_epi64x,
    _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32, _mm_shuffle_epi8,
    _mm_storeu_si128,
};
use std::sync::OnceLock;

const BLOCK_LEN: usize = 64;

/// FIPS 180-4 §4.2.2 round constants.
const K32: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Whether this CPU has the instructions `compress2` needs (checked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("sha")
                && std::is_x86_feature_detected!("sse2")
                && std::is_x86_feature_detected!("ssse3")
                && std::is_x86_feature_detected!("sse4.1")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Compresses `a_blocks` into `a` and `b_blocks` into `b`, interleaved. Both messages must
/// have the same number of whole blocks (`a_blocks.len() == b_blocks.len()`, a multiple of 64).
///
/// # Panics
/// If the CPU lacks the SHA extensions (check `available()` first) or the lengths differ.
pub fn compress2(a: &mut [u32; 8], a_blocks: &[u8], b: &mut [u32; 8], b_blocks: &[u8]) {
    assert!(
        available(),
        "compress2 needs the SHA extensions; check available() first"
    );
    assert_eq!(
        a_blocks.len(),
        b_blocks.len(),
        "both messages must have the same length"
    );
    assert_eq!(a_blocks.len() % BLOCK_LEN, 0, "whole blocks only");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU supports sha, sse2, ssse3 and sse4.1 (asserted through
    // `available()` above), which is all `digest_blocks2` is compiled for; the slices are
    // whole blocks of equal length, and every load and store below stays inside them.
    unsafe {
        digest_blocks2(a, a_blocks, b, b_blocks);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn schedule(v0: __m128i, v1: __m128i, v2: __m128i, v3: __m128i) -> __m128i {
    let t1 = _mm_sha256msg1_epu32(v0, v1);
    let t2 = _mm_alignr_epi8(v3, v2, 4);
    let t3 = _mm_add_epi32(t1, t2);
    _mm_sha256msg2_epu32(t3, v3)
}

#[cfg(target_arch = "x86_64")]
macro_rules! rounds4 {
    ($abef:expr, $cdgh:expr, $rest:expr, $i:expr) => {{
        let k = &K32[4 * $i..4 * $i + 4];
        let kv = _mm_set_epi32(k[3] as i32, k[2] as i32, k[1] as i32, k[0] as i32);
        let t1 = _mm_add_epi32($rest, kv);
        $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, t1);
        let t2 = _mm_shuffle_epi32(t1, 0x0E);
        $abef = _mm_sha256rnds2_epu32($abef, $cdgh, t2);
    }};
}

/// Four rounds for both messages: schedule the next message words, then round.
#[cfg(target_arch = "x86_64")]
macro_rules! schedule_rounds4_x2 {
    ($a:ident, $b:ident, $w0:ident, $w1:ident, $w2:ident, $w3:ident, $w4:ident, $i:expr) => {{
        $a.$w4 = schedule($a.$w0, $a.$w1, $a.$w2, $a.$w3);
        $b.$w4 = schedule($b.$w0, $b.$w1, $b.$w2, $b.$w3);
        rounds4!($a.abef_, $a.cdgh_, $a.$w4, $i);
        rounds4!($b.abef_, $b.cdgh_, $b.$w4, $i);
    }};
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Lane {
    abef_: __m128i,
    cdgh_: __m128i,
    w0: __m128i,
    w1: __m128i,
    w2: __m128i,
    w3: __m128i,
    w4: __m128i,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn load_state(state: &[u32; 8]) -> (__m128i, __m128i) {
    let ptr = state.as_ptr().cast::<__m128i>();
    let dcba = _mm_loadu_si128(ptr);
    let efgh = _mm_loadu_si128(ptr.add(1));
    let cdab = _mm_shuffle_epi32(dcba, 0xB1);
    let efgh = _mm_shuffle_epi32(efgh, 0x1B);
    (_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn store_state(state: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
    let feba = _mm_shuffle_epi32(abef, 0x1B);
    let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
    let hgef = _mm_alignr_epi8(dchg, feba, 8);
    let ptr = state.as_mut_ptr().cast::<__m128i>();
    _mm_storeu_si128(ptr, dcba);
    _mm_storeu_si128(ptr.add(1), hgef);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn load_words(block: &[u8], mask: __m128i) -> [__m128i; 4] {
    let ptr = block.as_ptr().cast::<__m128i>();
    [
        _mm_shuffle_epi8(_mm_loadu_si128(ptr), mask),
        _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(1)), mask),
        _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(2)), mask),
        _mm_shuffle_epi8(_mm_loadu_si128(ptr.add(3)), mask),
    ]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[allow(clippy::too_many_lines)]
unsafe fn digest_blocks2(a_state: &mut [u32; 8], a_blocks: &[u8], b_state: &mut [u32; 8], b_blocks: &[u8]) {
    let mask = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B_u64 as i64, 0x0405_0607_0001_0203_u64 as i64);
    let (a_abef, a_cdgh) = load_state(a_state);
    let (b_abef, b_cdgh) = load_state(b_state);
    let zero = _mm_set_epi32(0, 0, 0, 0);
    let mut a = Lane {
        abef_: a_abef,
        cdgh_: a_cdgh,
        w0: zero,
        w1: zero,
        w2: zero,
        w3: zero,
        w4: zero,
    };
    let mut b = Lane {
        abef_: b_abef,
        cdgh_: b_cdgh,
        w0: zero,
        w1: zero,
        w2: zero,
        w3: zero,
        w4: zero,
    };
    for (a_block, b_block) in a_blocks
        .chunks_exact(BLOCK_LEN)
        .zip(b_blocks.chunks_exact(BLOCK_LEN))
    {
        let (a_saved, b_saved) = (a, b);
        [a.w0, a.w1, a.w2, a.w3] = load_words(a_block, mask);
        [b.w0, b.w1, b.w2, b.w3] = load_words(b_block, mask);
        rounds4!(a.abef_, a.cdgh_, a.w0, 0);
        rounds4!(b.abef_, b.cdgh_, b.w0, 0);
        rounds4!(a.abef_, a.cdgh_, a.w1, 1);
        rounds4!(b.abef_, b.cdgh_, b.w1, 1);
        rounds4!(a.abef_, a.cdgh_, a.w2, 2);
        rounds4!(b.abef_, b.cdgh_, b.w2, 2);
        rounds4!(a.abef_, a.cdgh_, a.w3, 3);
        rounds4!(b.abef_, b.cdgh_, b.w3, 3);
        schedule_rounds4_x2!(a, b, w0, w1, w2, w3, w4, 4);
        schedule_rounds4_x2!(a, b, w1, w2, w3, w4, w0, 5);
        schedule_rounds4_x2!(a, b, w2, w3, w4, w0, w1, 6);
        schedule_rounds4_x2!(a, b, w3, w4, w0, w1, w2, 7);
        schedule_rounds4_x2!(a, b, w4, w0, w1, w2, w3, 8);
        schedule_rounds4_x2!(a, b, w0, w1, w2, w3, w4, 9);
        schedule_rounds4_x2!(a, b, w1, w2, w3, w4, w0, 10);
        schedule_rounds4_x2!(a, b, w2, w3, w4, w0, w1, 11);
        schedule_rounds4_x2!(a, b, w3, w4, w0, w1, w2, 12);
        schedule_rounds4_x2!(a, b, w4, w0, w1, w2, w3, 13);
        schedule_rounds4_x2!(a, b, w0, w1, w2, w3, w4, 14);
        schedule_rounds4_x2!(a, b, w1, w2, w3, w4, w0, 15);
        a.abef_ = _mm_add_epi32(a.abef_, a_saved.abef_);
        a.cdgh_ = _mm_add_epi32(a.cdgh_, a_saved.cdgh_);
        b.abef_ = _mm_add_epi32(b.abef_, b_saved.abef_);
        b.cdgh_ = _mm_add_epi32(b.cdgh_, b_saved.cdgh_);
    }
    store_state(a_state, a.abef_, a.cdgh_);
    store_state(b_state, b.abef_, b.cdgh_);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::digest::generic_array::GenericArray;

    fn reference(state: &[u32; 8], blocks: &[u8]) -> [u32; 8] {
        let mut state = *state;
        let blocks: Vec<GenericArray<u8, sha2::digest::typenum::U64>> = blocks
            .chunks_exact(64)
            .map(GenericArray::clone_from_slice)
            .collect();
        sha2::compress256(&mut state, &blocks);
        state
    }

    #[test]
    fn two_lanes_equal_the_sha2_crate_for_one_to_four_blocks() {
        if !available() {
            return; // nothing to compare on a CPU without the SHA extensions
        }
        let start = [
            0x6a09_e667,
            0xbb67_ae85,
            0x3c6e_f372,
            0xa54f_f53a,
            0x510e_527f,
            0x9b05_688c,
            0x1f83_d9ab,
            0x5be0_cd19,
        ];
        for blocks in 1..=4usize {
            for seed in 0..50u32 {
                let a_data: Vec<u8> = (0..blocks * 64)
                    .map(|i| (i as u32 * 31 + seed * 7) as u8)
                    .collect();
                let b_data: Vec<u8> = (0..blocks * 64)
                    .map(|i| (i as u32 * 17 + seed * 13 + 5) as u8)
                    .collect();
                let (mut a, mut b) = (start, start);
                compress2(&mut a, &a_data, &mut b, &b_data);
                assert_eq!(
                    a,
                    reference(&start, &a_data),
                    "lane a, {blocks} blocks, seed {seed}"
                );
                assert_eq!(
                    b,
                    reference(&start, &b_data),
                    "lane b, {blocks} blocks, seed {seed}"
                );
            }
        }
    }
}
