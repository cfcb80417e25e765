//! Micropayment channel states: the shape rules every signed state must follow, and the
//! batch verification of the signatures over them.
//!
//! A state is only ever signed over its exact encoded bytes under the
//! [`Domain::ChannelState`] domain, so the checks here decode the same bytes the
//! signatures cover, and accept only the canonical encoding: what a party signs is then
//! exactly what the fields say, no larger, so the state always fits the transaction
//! that defends it on the ledger.

use crate::domain::{signing_message, Domain};
use crate::ed25519;
use crate::error::{Error, Result};
use crate::hash::HASH_LEN;
use crate::limits::TX_BYTES_MAX;
use prost::Message;
use std::collections::{HashMap, HashSet};

use crate::wire::{
    decode,
    v1::{ChannelState, Payment, PaymentBatch},
};

/// Length of a channel id, chosen by the payer when it opens the channel.
pub const CHANNEL_ID_LEN: usize = 16;
/// Most hash locks one state may hold.
pub const LOCKS_MAX: usize = 1_024;
/// Room a state leaves under `TX_BYTES_MAX` for the transaction that carries it on the
/// ledger: a force close, challenge or close holds the state with both parties'
/// signatures, up to 64 preimages of 32 bytes (`PREIMAGES_MAX` in medledger.limits) and
/// the signed envelope (chain id of 64 bytes, tx id, expiry, signer's key and
/// signature), about 2.5 KiB at most; medledger.limits asserts that relation exactly.
pub const STATE_CARRIER_BYTES_BOUND: usize = 4 * 1024;
/// Largest encoded state accepted (60 KiB): a state both parties signed must fit the
/// challenge or force close that defends it, or a payee could be made to sign a state
/// it can never put on the ledger (the transaction would be refused as too large).
pub const STATE_BYTES_MAX: usize = TX_BYTES_MAX - STATE_CARRIER_BYTES_BOUND;
/// The largest canonical state the rules allow: a channel id, four varints of 10 bytes,
/// `LOCKS_MAX` locks (a 32-byte hash and two 10-byte varints, framed) and a lines
/// digest (59,490 bytes). `STATE_BYTES_MAX` is above it, so every state the rules allow
/// can be signed.
const STATE_BYTES_LARGEST: usize =
    (2 + CHANNEL_ID_LEN) + 4 * VARINT_FIELD_BYTES_MAX + LOCKS_MAX * (2 + LOCK_BYTES_MAX) + (2 + HASH_LEN) + 2;
/// A varint field with its one-byte tag.
const VARINT_FIELD_BYTES_MAX: usize = 1 + 10;
/// An encoded `HashLock`: a 32-byte hash and two varints, each with its tag.
const LOCK_BYTES_MAX: usize = (2 + HASH_LEN) + 2 * VARINT_FIELD_BYTES_MAX;
const _: () = assert!(LOCK_BYTES_MAX < 128, "a lock's length is a one-byte varint");
const _: () = assert!(STATE_BYTES_LARGEST <= STATE_BYTES_MAX);
const _: () = assert!(STATE_BYTES_MAX + STATE_CARRIER_BYTES_BOUND <= TX_BYTES_MAX);
/// Most payment lines one update may carry.
pub const BATCH_PAYMENTS_MAX: usize = 4_096;
/// Length of a payment id.
pub const PAYMENT_ID_LEN: usize = 16;
const CLAIM_ID_CHARS_MAX: usize = 64;
const PROCEDURE_CODE_CHARS_MAX: usize = 16;
const PATIENT_REF_LEN_MAX: usize = 32;

/// What one update's payment lines move, each line checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentSums {
    /// Paid into each lock the update adds, one entry per group of lines.
    pub locked: Vec<u64>,
    /// Paid to the payee outright (the lines after the locked groups).
    pub paid: u64,
    /// Refunded to the payer.
    pub refunded: u64,
}

/// Checks every payment line of one update's encoded `PaymentBatch` and returns what it
/// moves. The first `groups[0]` lines pay into the update's first new lock, the next
/// `groups[1]` into its second, and so on; those lines must be payments, not refunds.
/// The lines after the groups are paid outright or refunded. Each line needs a 16-byte
/// id unique in the batch, a positive amount and billing fields within their limits; a
/// failure names the line and its field, e.g. `batch.payments[3].payment_id`.
pub fn sum_payments(batch: &[u8], groups: &[u32]) -> Result<PaymentSums> {
    let decoded: PaymentBatch = decode("batch", batch)?;
    let count = decoded.payments.len();
    if count > BATCH_PAYMENTS_MAX {
        return Err(Error::limit(
            "batch.payments",
            "BATCH_PAYMENTS_MAX",
            BATCH_PAYMENTS_MAX,
            count,
        ));
    }
    let grouped = groups
        .iter()
        .try_fold(0_usize, |total, &n| total.checked_add(n as usize));
    if grouped.is_none_or(|total| total > count) {
        return Err(Error::invalid_argument(
            "new_locks.payments",
            format!("the locks cover more than the batch's {count} payments"),
        ));
    }
    // The group of each line: Some(lock index) for the first lines, then None.
    let mut owners = groups
        .iter()
        .enumerate()
        .flat_map(|(g, &n)| std::iter::repeat_n(g, n as usize))
        .map(Some)
        .chain(std::iter::repeat(None));
    let mut sums = PaymentSums {
        locked: vec![0; groups.len()],
        ..PaymentSums::default()
    };
    let mut seen = HashSet::with_capacity(count);
    let overflow = || Error::invalid_argument("batch", "the amounts overflow 64 bits");
    for (i, payment) in decoded.payments.iter().enumerate() {
        let invalid = |field: &str, reason: String| {
            Error::invalid_argument(format!("batch.payments[{i}].{field}"), reason)
        };
        check_line(payment, &invalid)?;
        if !seen.insert(payment.payment_id.as_slice()) {
            return Err(invalid("payment_id", "appears twice in the batch".into()));
        }
        let sum = match owners.next().flatten() {
            Some(_) if payment.refund => {
                return Err(invalid(
                    "refund",
                    "a line paid into a lock cannot be a refund".into(),
                ))
            }
            Some(group) => &mut sums.locked[group],
            None if payment.refund => &mut sums.refunded,
            None => &mut sums.paid,
        };
        *sum = sum.checked_add(payment.amount_micros).ok_or_else(overflow)?;
    }
    Ok(sums)
}

fn check_line(payment: &Payment, invalid: &impl Fn(&str, String) -> Error) -> Result<()> {
    if payment.payment_id.len() != PAYMENT_ID_LEN {
        return Err(invalid("payment_id", format!("must be {PAYMENT_ID_LEN} bytes")));
    }
    if payment.amount_micros == 0 {
        return Err(invalid("amount_micros", "must be positive".into()));
    }
    if let Some(line) = &payment.line {
        if line.claim_id.chars().count() > CLAIM_ID_CHARS_MAX {
            return Err(invalid(
                "line.claim_id",
                format!("longer than {CLAIM_ID_CHARS_MAX}"),
            ));
        }
        if line.procedure_code.chars().count() > PROCEDURE_CODE_CHARS_MAX {
            return Err(invalid(
                "line.procedure_code",
                format!("longer than {PROCEDURE_CODE_CHARS_MAX}"),
            ));
        }
        if line.patient_ref.len() > PATIENT_REF_LEN_MAX {
            return Err(invalid(
                "line.patient_ref",
                format!("longer than {PATIENT_REF_LEN_MAX} bytes"),
            ));
        }
    }
    Ok(())
}

/// Decodes `state` and checks its shape: the canonical encoding (the bytes its fields
/// encode to: no unknown fields, no field repeated, out of order or at its default
/// value), a 16-byte channel id, 32-byte lock hashes no two locks share, positive lock
/// amounts, a 32-byte (or absent) lines digest, no locks in a final state, and
/// `payer + payee + locks == deposit` without overflow.
pub fn check_state(state: &[u8]) -> Result<ChannelState> {
    if state.len() > STATE_BYTES_MAX {
        return Err(Error::limit(
            "state",
            "STATE_BYTES_MAX",
            STATE_BYTES_MAX,
            state.len(),
        ));
    }
    let decoded: ChannelState = decode("state", state)?;
    // prost skips unknown fields and takes the last of a repeated scalar, so bytes that
    // decode may carry more than their fields: padding a payee would sign but that no
    // transaction could carry, or two encodings of one state. Only the encoding of the
    // decoded fields is accepted (it is what medledger and protobuf encoders write).
    if decoded.encoded_len() != state.len() || decoded.encode_to_vec() != state {
        return Err(Error::invalid_argument(
            "state",
            "not the canonical encoding of its fields (unknown fields, or fields repeated, \
             out of order or at their default value)",
        ));
    }
    if decoded.channel_id.len() != CHANNEL_ID_LEN {
        return Err(Error::invalid_argument(
            "channel_id",
            format!("must be {CHANNEL_ID_LEN} bytes, got {}", decoded.channel_id.len()),
        ));
    }
    if !(decoded.lines_digest.is_empty() || decoded.lines_digest.len() == HASH_LEN) {
        return Err(Error::invalid_argument(
            "lines_digest",
            format!("must be {HASH_LEN} bytes, got {}", decoded.lines_digest.len()),
        ));
    }
    if decoded.locks.len() > LOCKS_MAX {
        return Err(Error::limit("locks", "LOCKS_MAX", LOCKS_MAX, decoded.locks.len()));
    }
    if decoded.r#final && !decoded.locks.is_empty() {
        return Err(Error::invalid_argument(
            "locks",
            "a final state must not hold locks",
        ));
    }
    let overflow = || Error::invalid_argument("deposit_micros", "the amounts overflow 64 bits");
    let mut total = decoded
        .payer_micros
        .checked_add(decoded.payee_micros)
        .ok_or_else(overflow)?;
    // A lock is resolved by its hash: the update rules keep one lock per hash, so a
    // state holding two (which no update makes, but a counterparty could sign and put on
    // the ledger) would settle both with one preimage or drop one's money.
    let mut hashes = HashMap::with_capacity(decoded.locks.len());
    for (i, lock) in decoded.locks.iter().enumerate() {
        if lock.hash.len() != HASH_LEN {
            return Err(Error::invalid_argument(
                format!("locks[{i}].hash"),
                format!("must be {HASH_LEN} bytes, got {}", lock.hash.len()),
            ));
        }
        if let Some(first) = hashes.insert(lock.hash.as_slice(), i) {
            return Err(Error::invalid_argument(
                format!("locks[{i}].hash"),
                format!("the hash of locks[{first}] again: each lock needs its own hash"),
            ));
        }
        if lock.amount_micros == 0 {
            return Err(Error::invalid_argument(
                format!("locks[{i}].amount_micros"),
                "must be positive",
            ));
        }
        total = total.checked_add(lock.amount_micros).ok_or_else(overflow)?;
    }
    if total != decoded.deposit_micros {
        return Err(Error::invalid_argument(
            "deposit_micros",
            format!(
                "payer, payee and locked amounts add up to {total}, not the deposit {}",
                decoded.deposit_micros
            ),
        ));
    }
    debug_assert_eq!(
        held_u128(&decoded),
        u128::from(decoded.deposit_micros),
        "a checked state's payer, payee and locks add up to its deposit"
    );
    Ok(decoded)
}

/// payer + payee + locks, in a width that cannot overflow: the invariant `check_state`
/// promises, recomputed independently of its checked sum.
fn held_u128(state: &ChannelState) -> u128 {
    let locked: u128 = state
        .locks
        .iter()
        .map(|lock| u128::from(lock.amount_micros))
        .sum();
    u128::from(state.payer_micros) + u128::from(state.payee_micros) + locked
}

/// One verdict per (state, public key, signature): whether the key signed that encoded
/// state on `chain_id`. Verified with the batch equation; the verdicts are exactly those
/// of one-by-one verification.
pub fn verify_states<S, K, G>(
    chain_id: &str,
    states: &[S],
    public_keys: &[K],
    signatures: &[G],
    threads: Option<usize>,
) -> Result<Vec<bool>>
where
    S: AsRef<[u8]>,
    K: AsRef<[u8]> + Sync,
    G: AsRef<[u8]> + Sync,
{
    let messages = states
        .iter()
        .map(|state| signing_message(Domain::ChannelState, chain_id, state.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    ed25519::verify_batch(public_keys, &messages, signatures, threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ed25519::SigningKey;
    use crate::wire::v1::{BillingLine, HashLock, Payment};

    fn state(sender_keeps: u64, receiver_has: u64, locks: &[u64], deposit: u64) -> ChannelState {
        ChannelState {
            channel_id: vec![7; CHANNEL_ID_LEN],
            sequence: 1,
            deposit_micros: deposit,
            payer_micros: sender_keeps,
            payee_micros: receiver_has,
            locks: locks
                .iter()
                .map(|&amount_micros| HashLock {
                    hash: vec![1; HASH_LEN],
                    amount_micros,
                    expiry_height: 10,
                })
                .collect(),
            lines_digest: vec![0; HASH_LEN],
            r#final: false,
        }
    }

    fn field_of(error: Error) -> String {
        match error {
            Error::InvalidArgument { field, .. } | Error::Decode { field, .. } => field,
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn balances_and_locks_must_add_up_to_the_deposit() {
        assert!(check_state(&state(60, 30, &[10], 100).encode_to_vec()).is_ok());
        let short = check_state(&state(60, 30, &[9], 100).encode_to_vec()).unwrap_err();
        assert_eq!(field_of(short), "deposit_micros");
        let overflow = check_state(&state(u64::MAX, 1, &[], 0).encode_to_vec()).unwrap_err();
        assert_eq!(field_of(overflow), "deposit_micros");
    }

    #[test]
    fn shape_errors_name_the_field() {
        let mut bad_id = state(1, 0, &[], 1);
        bad_id.channel_id.pop();
        assert_eq!(
            field_of(check_state(&bad_id.encode_to_vec()).unwrap_err()),
            "channel_id"
        );
        let mut bad_lock = state(1, 0, &[2], 3);
        bad_lock.locks[0].hash.push(0);
        assert_eq!(
            field_of(check_state(&bad_lock.encode_to_vec()).unwrap_err()),
            "locks[0].hash"
        );
        let zero_lock = state(1, 0, &[0], 1);
        assert_eq!(
            field_of(check_state(&zero_lock.encode_to_vec()).unwrap_err()),
            "locks[0].amount_micros"
        );
        let mut final_with_lock = state(1, 0, &[1], 2);
        final_with_lock.r#final = true;
        assert_eq!(
            field_of(check_state(&final_with_lock.encode_to_vec()).unwrap_err()),
            "locks"
        );
        assert_eq!(field_of(check_state(&[0xff, 0xff]).unwrap_err()), "state");
    }

    fn line(id: u8, amount_micros: u64, refund: bool) -> Payment {
        Payment {
            payment_id: vec![id; PAYMENT_ID_LEN],
            amount_micros,
            line: Some(BillingLine {
                claim_id: "CLM1".into(),
                procedure_code: "99213".into(),
                units: 1,
                patient_ref: vec![9; 8],
                service_date: "2026-11-25".into(),
            }),
            refund,
            refund_signature: Vec::new(),
        }
    }

    fn batch(payments: Vec<Payment>) -> Vec<u8> {
        PaymentBatch { payments }.encode_to_vec()
    }

    #[test]
    fn a_batch_sums_payments_and_refunds_apart() {
        let lines = vec![line(1, 5, false), line(2, 7, false), line(3, 4, true)];
        let sums = sum_payments(&batch(lines), &[]).unwrap();
        assert_eq!((sums.locked, sums.paid, sums.refunded), (vec![], 12, 4));
        assert_eq!(sum_payments(&[], &[]).unwrap(), PaymentSums::default());
    }

    #[test]
    fn grouped_lines_pay_into_their_locks_in_order() {
        let lines = vec![
            line(1, 5, false),
            line(2, 7, false),
            line(3, 1, false),
            line(4, 2, false),
            line(5, 4, true),
        ];
        let sums = sum_payments(&batch(lines.clone()), &[2, 1]).unwrap();
        assert_eq!((sums.locked, sums.paid, sums.refunded), (vec![12, 1], 2, 4));
        let empty_group = sum_payments(&batch(lines.clone()), &[0, 4]).unwrap();
        assert_eq!(empty_group.locked, vec![0, 15]);
        // A refund inside a group, and groups longer than the batch, are refused.
        let field = |groups: &[u32]| field_of(sum_payments(&batch(lines.clone()), groups).unwrap_err());
        assert_eq!(field(&[5]), "batch.payments[4].refund");
        assert_eq!(field(&[3, 3]), "new_locks.payments");
        assert_eq!(field(&[u32::MAX, u32::MAX]), "new_locks.payments");
    }

    #[test]
    fn a_bad_payment_line_is_named_with_its_index() {
        let mut short_id = line(2, 5, false);
        short_id.payment_id.pop();
        let cases = [
            (vec![line(1, 5, false), short_id], "batch.payments[1].payment_id"),
            (vec![line(1, 0, false)], "batch.payments[0].amount_micros"),
            (
                vec![line(1, 5, false), line(1, 6, false)],
                "batch.payments[1].payment_id",
            ),
            (vec![line(1, u64::MAX, false), line(2, 1, false)], "batch"),
        ];
        for (lines, field) in cases {
            assert_eq!(field_of(sum_payments(&batch(lines), &[]).unwrap_err()), field);
        }
        let mut long_code = line(1, 5, false);
        long_code.line.as_mut().unwrap().procedure_code = "9".repeat(17);
        assert_eq!(
            field_of(sum_payments(&batch(vec![long_code]), &[]).unwrap_err()),
            "batch.payments[0].line.procedure_code"
        );
        assert_eq!(field_of(sum_payments(&[0xff], &[]).unwrap_err()), "batch");
    }

    /// `state` with distinct lock hashes: lock `i` has `i + 1` (little-endian) in its first two bytes.
    fn distinct_hashes(mut state: ChannelState) -> ChannelState {
        for (i, lock) in state.locks.iter_mut().enumerate() {
            lock.hash = vec![0; HASH_LEN];
            lock.hash[..2].copy_from_slice(&(i as u16 + 1).to_le_bytes());
        }
        state
    }

    #[test]
    fn two_locks_of_one_hash_are_refused_naming_the_second() {
        let twice = state(60, 10, &[20, 10], 100);
        assert_eq!(twice.locks[0].hash, twice.locks[1].hash);
        let error = check_state(&twice.encode_to_vec()).unwrap_err();
        assert!(error.to_string().contains("locks[0]"), "{error}");
        assert_eq!(field_of(error), "locks[1].hash");
        // Among many, the first repeat is named; distinct hashes pass.
        let mut many = distinct_hashes(state(0, 0, &[1; 5], 5));
        assert!(check_state(&many.encode_to_vec()).is_ok());
        many.locks[4].hash = many.locks[2].hash.clone();
        assert_eq!(
            field_of(check_state(&many.encode_to_vec()).unwrap_err()),
            "locks[4].hash"
        );
    }

    #[test]
    fn only_the_canonical_encoding_of_a_state_is_accepted() {
        let canonical = state(60, 30, &[10], 100).encode_to_vec();
        assert!(check_state(&canonical).is_ok());
        let unknown_field = [canonical.as_slice(), &[0xc2, 0x3e, 2, 0, 0]].concat(); // field 1000
        let unknown_varint = [canonical.as_slice(), &[0x48, 1]].concat(); // field 9 = 1
        let sequence_again = [canonical.as_slice(), &[0x10, 1]].concat(); // sequence = 1 twice
        let explicit_default = [&[0x40, 0][..], canonical.as_slice()].concat(); // final = false
        let mut out_of_order = canonical[18..].to_vec(); // the channel id moved to the end
        out_of_order.extend_from_slice(&canonical[..18]);
        // sequence 1 written in two bytes (0x81 0x00) instead of one, after the channel id
        assert_eq!(canonical[18..20], [0x10, 1]);
        let long_varint = [&canonical[..19], &[0x81, 0x00], &canonical[20..]].concat();
        for bytes in [
            unknown_field,
            unknown_varint,
            sequence_again,
            explicit_default,
            out_of_order,
            long_varint,
        ] {
            let decoded: ChannelState = decode("state", &bytes).unwrap();
            assert_eq!(decoded, state(60, 30, &[10], 100), "the same fields, other bytes");
            assert_eq!(field_of(check_state(&bytes).unwrap_err()), "state");
        }
        // Padding a state up to STATE_BYTES_MAX with an unknown field is refused too.
        let pad = STATE_BYTES_MAX - canonical.len() - 2 - 3;
        let mut padded = canonical.clone();
        padded.extend_from_slice(&[0xc2, 0x3e]);
        padded.extend_from_slice(&[
            (pad as u8 & 0x7f) | 0x80,
            (pad >> 7) as u8 | 0x80,
            (pad >> 14) as u8,
        ]);
        padded.resize(STATE_BYTES_MAX, 0);
        assert!(decode::<ChannelState>("state", &padded).is_ok());
        assert_eq!(field_of(check_state(&padded).unwrap_err()), "state");
    }

    #[test]
    fn the_largest_state_the_rules_allow_fits_under_the_limit_which_leaves_room_for_its_carrier() {
        let mut largest = distinct_hashes(state(u64::MAX, u64::MAX, &[u64::MAX; LOCKS_MAX], u64::MAX));
        largest.sequence = u64::MAX;
        for lock in &mut largest.locks {
            lock.expiry_height = u64::MAX;
        }
        assert_eq!(largest.encoded_len(), STATE_BYTES_LARGEST - 2); // no `final` with locks
                                                                    // (STATE_BYTES_LARGEST <= STATE_BYTES_MAX is asserted when the crate compiles.)
                                                                    // One that also adds up: accepted.
        let per_lock = u64::MAX / (LOCKS_MAX as u64 + 2);
        let mut valid = largest.clone();
        for lock in &mut valid.locks {
            lock.amount_micros = per_lock;
        }
        valid.payer_micros = per_lock;
        valid.payee_micros = u64::MAX - per_lock * (LOCKS_MAX as u64 + 1);
        assert!(valid.encoded_len() <= STATE_BYTES_MAX);
        assert!(check_state(&valid.encode_to_vec()).is_ok());
        // One past the limit is refused before it is decoded.
        let error = check_state(&vec![0; STATE_BYTES_MAX + 1]).unwrap_err();
        assert!(
            matches!(
                error,
                Error::LimitExceeded {
                    limit_name: "STATE_BYTES_MAX",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn signatures_bind_the_state_the_key_and_the_chain() {
        let sender = SigningKey::from_seed(&[1; 32]).unwrap();
        let receiver = SigningKey::from_seed(&[2; 32]).unwrap();
        let bytes = state(60, 40, &[], 100).encode_to_vec();
        let message = signing_message(Domain::ChannelState, "chain", &bytes).unwrap();
        let (sender_sig, receiver_sig) = (sender.sign(&message), receiver.sign(&message));
        let keys = [sender.public_key(), receiver.public_key()];
        let verdicts = verify_states(
            "chain",
            &[&bytes, &bytes],
            &keys,
            &[sender_sig, receiver_sig],
            None,
        )
        .unwrap();
        assert_eq!(verdicts, [true, true]);
        // Swapped signatures, another chain, another state: all refused.
        let swapped = verify_states(
            "chain",
            &[&bytes, &bytes],
            &keys,
            &[receiver_sig, sender_sig],
            None,
        )
        .unwrap();
        assert_eq!(swapped, [false, false]);
        let other_chain = verify_states("other", &[&bytes], &keys[..1], &[sender_sig], None).unwrap();
        assert_eq!(other_chain, [false]);
        let other_state = state(59, 41, &[], 100).encode_to_vec();
        let tampered = verify_states("chain", &[&other_state], &keys[..1], &[sender_sig], None).unwrap();
        assert_eq!(tampered, [false]);
    }
}
