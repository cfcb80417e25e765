//! Ed25519 keys, signing, and strict verification — one at a time or in batches.
//!
//! # Which signatures are accepted
//!
//! RFC 8032 §5.1.7, strictly:
//! - `S` must be canonical (`S < L`), else reject (no malleability);
//! - `A` and `R` must be canonical point encodings (`y < p`, and no "negative zero"),
//!   checked by re-encoding the decoded point;
//! - `A` and `R` must not be of small order (weak keys, trivially forgeable signatures);
//! - the **cofactored** group equation `[8][S]B = [8]R + [8][k]A` must hold, with
//!   `k = SHA-512(R || A || M) mod L`.
//!
//! The cofactored equation is the one RFC 8032 states. It is also the only one for which a
//! randomised batch check is *exactly* as strict as the single check: with the cofactorless
//! equation a torsion component in `R` or `A` can make a batch accept (with probability up
//! to 1/2) what the single check rejects, and validators that verify one way and the other
//! would disagree about a block. Here `verify_batch(items)[i] == verify(items[i])` always
//! (up to the 2^-128 soundness error of the random coefficients).

use std::collections::HashMap;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::Signer as _;
use rand_core::{OsRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha512};

use crate::error::{Error, Result};
use crate::limits::VERIFY_BATCH_MAX;
use crate::parallel::run_with_threads;

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
pub const SEED_LEN: usize = 32;

/// Batches at or below this size are checked one signature at a time: the batch equation
/// only pays off once its multiscalar multiplication is shared by several signatures.
const BISECT_LEAF_LEN: usize = 4;
/// Bounds on how many signatures one worker checks in one batch equation. Larger chunks
/// amortise better (Pippenger), smaller chunks spread across cores and cost less to
/// bisect when a batch contains a bad signature.
const CHUNK_LEN_MIN: usize = 32;
const CHUNK_LEN_MAX: usize = 1024;

/// An Ed25519 signing key. The secret is zeroised when the key is dropped.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("SigningKey")
            .field("public_key", &crate::hash::to_hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }

    /// The key whose RFC 8032 secret seed is `seed` (32 bytes).
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        let seed: &[u8; SEED_LEN] = seed.try_into().map_err(|_| {
            Error::invalid_argument("seed", format!("must be {SEED_LEN} bytes, got {}", seed.len()))
        })?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(seed)))
    }

    /// The 32-byte secret seed. Handle with care: it is the whole key.
    pub fn seed(&self) -> [u8; SEED_LEN] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.verifying_key().to_bytes()
    }

    /// RFC 8032 Ed25519 signature of `message` (deterministic).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }
}

/// Whether a 32-byte point encoding has its y coordinate below p = 2^255 - 19. The only
/// encodings with y >= p are y = p + j for j in 0..19: low byte 0xed + j, every middle
/// byte 0xff, the top byte 0x7f once the sign bit is masked off.
fn y_is_canonical(encoded: &[u8; 32]) -> bool {
    !(encoded[0] >= 0xed && encoded[1..31].iter().all(|b| *b == 0xff) && encoded[31] & 0x7f == 0x7f)
}

/// Decodes a point, accepting only canonical encodings of points not of small order.
///
/// An encoding is canonical when y < p and it does not set the sign bit of x = 0
/// ("negative zero"). The second case needs no test of its own: x = 0 only for y = 1 and
/// y = -1, the identity and the point of order 2, both refused as small order. Checking
/// y on the bytes instead of re-encoding the point saves a field inversion per point,
/// about a third of a signature's cost (`canonical_check_agrees_with_re_encoding` holds
/// the two formulations equal).
fn decode_point_strict(encoded: &[u8; 32]) -> Option<EdwardsPoint> {
    if !y_is_canonical(encoded) {
        return None;
    }
    let point = CompressedEdwardsY(*encoded).decompress()?;
    if point.is_small_order() {
        return None;
    }
    Some(point)
}

/// A signature whose encodings passed the strict checks, ready for the group equation.
/// `key` numbers the distinct public keys of the batch it belongs to.
struct Prepared {
    a: EdwardsPoint,
    key: usize,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Checks the encodings of `R` and `S` and computes `k`, for a public key already decoded
/// (`a`, numbered `key`).
fn prepare_with_key(
    a: EdwardsPoint,
    key: usize,
    public_key: &[u8; PUBLIC_KEY_LEN],
    message: &[u8],
    signature: &[u8],
) -> Option<Prepared> {
    let signature: &[u8; SIGNATURE_LEN] = signature.try_into().ok()?;
    let (r_bytes, s_bytes) = signature.split_at(32);
    let r_bytes: &[u8; 32] = r_bytes.try_into().ok()?;
    let s_bytes: [u8; 32] = s_bytes.try_into().ok()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = decode_point_strict(r_bytes)?;
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(r_bytes)
            .chain_update(public_key)
            .chain_update(message),
    );
    Some(Prepared { a, key, r, s, k })
}

fn prepare(public_key: &[u8], message: &[u8], signature: &[u8]) -> Option<Prepared> {
    let public_key: &[u8; PUBLIC_KEY_LEN] = public_key.try_into().ok()?;
    let a = decode_point_strict(public_key)?;
    prepare_with_key(a, 0, public_key, message, signature)
}

/// `[8]([S]B - [k]A - R) == 0`.
fn equation_holds(p: &Prepared) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&-p.k, &p.a, &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// Strict verification of one signature. Malformed input (wrong lengths, bad encodings)
/// is simply invalid.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    prepare(public_key, message, signature).is_some_and(|p| equation_holds(&p))
}

/// One randomised batch equation over `items`:
/// `[8]( [-Σ z_i S_i]B + Σ [z_i]R_i + Σ [z_i k_i]A_i ) == 0` with random 128-bit `z_i`.
///
/// Terms of one public key are gathered into one: `Σ [z_i k_i]A = [Σ z_i k_i]A`, the same
/// sum with one point instead of many (as ed25519-zebra does). A payer signing many
/// transactions then costs one multiscalar term per signature instead of two.
fn batch_equation_holds(items: &[&Prepared]) -> bool {
    let mut random = vec![0u8; 16 * items.len()];
    OsRng.fill_bytes(&mut random);
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    let mut key_slots: HashMap<usize, usize> = HashMap::with_capacity(items.len());
    let mut key_scalars: Vec<Scalar> = Vec::new();
    let mut key_points: Vec<EdwardsPoint> = Vec::new();
    let mut b_coefficient = Scalar::ZERO;
    for (item, z_bytes) in items.iter().zip(random.chunks_exact(16)) {
        let mut wide = [0u8; 32];
        wide[..16].copy_from_slice(z_bytes);
        let z = Scalar::from_bytes_mod_order(wide);
        b_coefficient -= z * item.s;
        scalars.push(z);
        points.push(item.r);
        let slot = *key_slots.entry(item.key).or_insert_with(|| {
            key_scalars.push(Scalar::ZERO);
            key_points.push(item.a);
            key_points.len() - 1
        });
        key_scalars[slot] += z * item.k;
    }
    scalars.extend(key_scalars);
    points.extend(key_points);
    scalars.push(b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    // The equation above is Σ z_i ([S_i]B - R_i - [k_i]A_i) negated; same zero test.
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// Verdicts for `items`, bisecting a failed batch until the bad signatures are isolated.
fn verdicts_by_bisection(items: &[&Prepared], out: &mut [bool]) {
    if items.len() <= BISECT_LEAF_LEN {
        for (item, verdict) in items.iter().zip(out.iter_mut()) {
            *verdict = equation_holds(item);
        }
        return;
    }
    if batch_equation_holds(items) {
        out.fill(true);
        return;
    }
    let mid = items.len() / 2;
    let (left, right) = items.split_at(mid);
    let (out_left, out_right) = out.split_at_mut(mid);
    verdicts_by_bisection(left, out_left);
    verdicts_by_bisection(right, out_right);
}

/// Strictly verifies many signatures with the batch equation on all cores (or on
/// `threads` of them). Returns one verdict per item, identical to what [`verify`] gives for
/// that item. Errors only when the three slices differ in length or exceed
/// `VERIFY_BATCH_MAX`.
pub fn verify_batch<K, M, S>(
    public_keys: &[K],
    messages: &[M],
    signatures: &[S],
    threads: Option<usize>,
) -> Result<Vec<bool>>
where
    K: AsRef<[u8]> + Sync,
    M: AsRef<[u8]> + Sync,
    S: AsRef<[u8]> + Sync,
{
    let count = public_keys.len();
    if messages.len() != count || signatures.len() != count {
        return Err(Error::invalid_argument(
            "public_keys, messages, signatures",
            format!(
                "must have equal lengths, got {count}, {}, {}",
                messages.len(),
                signatures.len()
            ),
        ));
    }
    if count > VERIFY_BATCH_MAX {
        return Err(Error::limit(
            "signatures",
            "VERIFY_BATCH_MAX",
            VERIFY_BATCH_MAX,
            count,
        ));
    }
    run_with_threads(threads, || {
        // Each distinct public key is decoded once per batch.
        let mut key_numbers: HashMap<&[u8], usize> = HashMap::new();
        let mut distinct: Vec<&[u8]> = Vec::new();
        let numbers: Vec<usize> = public_keys
            .iter()
            .map(|key| {
                *key_numbers.entry(key.as_ref()).or_insert_with(|| {
                    distinct.push(key.as_ref());
                    distinct.len() - 1
                })
            })
            .collect();
        let decoded: Vec<Option<EdwardsPoint>> = distinct
            .par_iter()
            .map(|key| {
                <&[u8; PUBLIC_KEY_LEN]>::try_from(*key)
                    .ok()
                    .and_then(decode_point_strict)
            })
            .collect();
        let prepared: Vec<Option<Prepared>> = (0..count)
            .into_par_iter()
            .map(|i| {
                let key = numbers[i];
                let a = decoded[key]?;
                let public_key: &[u8; PUBLIC_KEY_LEN] = public_keys[i].as_ref().try_into().ok()?;
                prepare_with_key(a, key, public_key, messages[i].as_ref(), signatures[i].as_ref())
            })
            .collect();
        let well_formed: Vec<(usize, &Prepared)> = prepared
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
            .collect();
        let chunk_len =
            (well_formed.len() / rayon::current_num_threads().max(1)).clamp(CHUNK_LEN_MIN, CHUNK_LEN_MAX);
        let chunk_verdicts: Vec<Vec<bool>> = well_formed
            .par_chunks(chunk_len)
            .map(|chunk| {
                let items: Vec<&Prepared> = chunk.iter().map(|(_, p)| *p).collect();
                let mut verdicts = vec![false; items.len()];
                verdicts_by_bisection(&items, &mut verdicts);
                verdicts
            })
            .collect();
        let mut verdicts = vec![false; count];
        for ((index, _), verdict) in well_formed.iter().zip(chunk_verdicts.into_iter().flatten()) {
            verdicts[*index] = verdict;
        }
        verdicts
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Batch = (Vec<[u8; 32]>, Vec<Vec<u8>>, Vec<[u8; 64]>);

    fn signed(n: usize) -> Batch {
        let mut keys = Vec::new();
        let mut messages = Vec::new();
        let mut signatures = Vec::new();
        for i in 0..n {
            let key = SigningKey::from_seed(&[i as u8; 32]).unwrap();
            let message = format!("message {i}").into_bytes();
            signatures.push(key.sign(&message));
            keys.push(key.public_key());
            messages.push(message);
        }
        (keys, messages, signatures)
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let key = SigningKey::generate();
        let signature = key.sign(b"hello");
        assert!(verify(&key.public_key(), b"hello", &signature));
        assert!(!verify(&key.public_key(), b"hellO", &signature));
    }

    #[test]
    fn wrong_lengths_are_invalid_not_errors() {
        let key = SigningKey::generate();
        let signature = key.sign(b"m");
        assert!(!verify(&key.public_key()[..31], b"m", &signature));
        assert!(!verify(&key.public_key(), b"m", &signature[..63]));
        assert!(!verify(&[], b"m", &[]));
    }

    #[test]
    fn non_canonical_s_is_rejected() {
        // S + L verifies under a lax check; strict verification must refuse it.
        let key = SigningKey::from_seed(&[7; 32]).unwrap();
        let mut signature = key.sign(b"m");
        let s = Scalar::from_canonical_bytes(signature[32..].try_into().unwrap()).unwrap();
        // L, the order of the base point, little-endian.
        let l_bytes: [u8; 32] =
            hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
                .unwrap()
                .try_into()
                .unwrap();
        let (mut carry, mut sum) = (0u16, [0u8; 32]);
        for i in 0..32 {
            let v = u16::from(s.to_bytes()[i]) + u16::from(l_bytes[i]) + carry;
            sum[i] = v as u8;
            carry = v >> 8;
        }
        signature[32..].copy_from_slice(&sum);
        assert!(!verify(&key.public_key(), b"m", &signature));
    }

    #[test]
    fn small_order_public_key_is_rejected() {
        // The identity point: every signature with R = [S]B would verify under it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let s = Scalar::from_bytes_mod_order([3; 32]);
        let r = EdwardsPoint::mul_base(&s).compress().to_bytes();
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice(&s.to_bytes());
        assert!(!verify(&identity, b"anything", &signature));
    }

    #[test]
    fn batch_of_valid_signatures_is_all_true() {
        let (keys, messages, signatures) = signed(300);
        let verdicts = verify_batch(&keys, &messages, &signatures, None).unwrap();
        assert!(verdicts.iter().all(|v| *v));
    }

    #[test]
    fn batch_reports_each_bad_signature_at_its_index() {
        let (keys, messages, mut signatures) = signed(300);
        for bad in [0, 137, 299] {
            signatures[bad][5] ^= 1;
        }
        let verdicts = verify_batch(&keys, &messages, &signatures, Some(2)).unwrap();
        for (i, verdict) in verdicts.iter().enumerate() {
            assert_eq!(*verdict, ![0, 137, 299].contains(&i), "index {i}");
        }
    }

    #[test]
    fn batch_rejects_mismatched_lengths() {
        let (keys, messages, signatures) = signed(3);
        assert!(verify_batch(&keys, &messages[..2], &signatures, None).is_err());
    }

    /// The strict decoding as first written: decode, re-encode, compare, refuse small order.
    fn decode_by_re_encoding(encoded: &[u8; 32]) -> Option<EdwardsPoint> {
        let point = CompressedEdwardsY(*encoded).decompress()?;
        (point.compress().as_bytes() == encoded && !point.is_small_order()).then_some(point)
    }

    #[test]
    fn canonical_check_agrees_with_re_encoding() {
        let mut encodings: Vec<[u8; 32]> = Vec::new();
        // Every y >= p (p + j for j < 19) and the values just below p, with both signs.
        for low in 0xe0..=0xff_u8 {
            for sign in [0x00, 0x80] {
                let mut y = [0xff_u8; 32];
                y[0] = low;
                y[31] = 0x7f | sign;
                encodings.push(y);
            }
        }
        // y = 0, 1 and -1 (small order) and y = 1 with x = "negative zero".
        for (low, sign) in [(0u8, 0u8), (1, 0), (1, 0x80), (0xec, 0), (0xec, 0x80)] {
            let mut y = if low == 0xec { [0xff_u8; 32] } else { [0u8; 32] };
            y[0] = low;
            y[31] = if low == 0xec { 0x7f | sign } else { sign };
            encodings.push(y);
        }
        // Real public keys and arbitrary byte strings (about half are not on the curve).
        let mut state = [0u8; 32];
        for i in 0..20_000_u32 {
            state = crate::hash::sha256(&[&state[..], &i.to_le_bytes()].concat());
            encodings.push(state);
            if i % 10 == 0 {
                encodings.push(SigningKey::from_seed(&state).unwrap().public_key());
            }
        }
        let mut accepted = 0;
        for encoded in &encodings {
            let strict = decode_point_strict(encoded);
            assert_eq!(
                strict.map(|p| p.compress()),
                decode_by_re_encoding(encoded).map(|p| p.compress()),
                "{}",
                crate::hash::to_hex(encoded)
            );
            accepted += usize::from(strict.is_some());
        }
        assert!(
            accepted > 9_000,
            "the sample must exercise valid points too: {accepted}"
        );
    }

    #[test]
    fn one_key_signing_many_messages_batches_with_others_and_bad_items_are_found() {
        let key = SigningKey::from_seed(&[42; 32]).unwrap();
        let (mut keys, mut messages, mut signatures) = signed(40);
        for i in 0..200 {
            let message = format!("payment {i}").into_bytes();
            signatures.push(key.sign(&message));
            keys.push(key.public_key());
            messages.push(message);
        }
        assert!(verify_batch(&keys, &messages, &signatures, Some(2))
            .unwrap()
            .iter()
            .all(|v| *v));
        // A bad signature among the repeated key's items, and one message swapped between
        // two items of that key: each is named, the rest stay valid.
        signatures[100][40] ^= 1;
        messages.swap(150, 151);
        let verdicts = verify_batch(&keys, &messages, &signatures, Some(2)).unwrap();
        for (i, verdict) in verdicts.iter().enumerate() {
            assert_eq!(*verdict, ![100, 150, 151].contains(&i), "index {i}");
            assert_eq!(
                *verdict,
                verify(&keys[i], &messages[i], &signatures[i]),
                "index {i}"
            );
        }
    }

    #[test]
    fn torsion_in_r_is_judged_the_same_alone_and_in_a_batch() {
        // A signer who knows its secret scalar can publish R' = [r]B + T with T of order 2
        // and S = r + k'a. The cofactorless equation then fails while the cofactored one
        // holds. Alone or in any batch, the verdict must be the same: accepted, every time.
        let a = Scalar::from_bytes_mod_order([11; 32]);
        let public_key = EdwardsPoint::mul_base(&a).compress().to_bytes();
        let order_two = CompressedEdwardsY({
            // y = -1 encodes (0, -1), the point of order 2.
            let mut y = [0xff_u8; 32];
            y[0] = 0xec;
            y[31] = 0x7f;
            y
        })
        .decompress()
        .unwrap();
        assert!(order_two.is_small_order() && !order_two.is_identity());
        let nonce = Scalar::from_bytes_mod_order([5; 32]);
        let r_prime = (EdwardsPoint::mul_base(&nonce) + order_two).compress().to_bytes();
        let message = b"torsion";
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(r_prime)
                .chain_update(public_key)
                .chain_update(message),
        );
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r_prime);
        signature[32..].copy_from_slice(&(nonce + k * a).to_bytes());
        assert!(verify(&public_key, message, &signature));

        let (mut keys, mut messages, mut signatures) = signed(64);
        keys.push(public_key);
        messages.push(message.to_vec());
        signatures.push(signature);
        for _ in 0..20 {
            let verdicts = verify_batch(&keys, &messages, &signatures, None).unwrap();
            assert!(verdicts.iter().all(|v| *v));
        }
    }
}
