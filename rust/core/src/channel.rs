//! Micropayment channel states: the shape rules every signed state must follow, and the
//! batch verification of the signatures over them.
//!
//! A state is only ever signed over its exact encoded bytes under the
//! [`Domain::ChannelState`] domain, so the checks here decode the same bytes the
//! signatures cover.

use crate::domain::{signing_message, Domain};
use crate::ed25519;
use crate::error::{Error, Result};
use crate::hash::HASH_LEN;
use std::collections::HashSet;

use crate::wire::{
    decode,
    v1::{ChannelState, Payment, PaymentBatch},
};

/// Length of a channel id, chosen by the payer when it opens the channel.
pub const CHANNEL_ID_LEN: usize = 16;
/// Most hash locks one state may hold.
pub const LOCKS_MAX: usize = 1_024;
/// Largest encoded state accepted.
pub const STATE_BYTES_MAX: usize = 64 * 1024;
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

/// Decodes `state` and checks its shape: a 16-byte channel id, 32-byte lock hashes,
/// positive lock amounts, a 32-byte (or absent) lines digest, no locks in a final state,
/// and `payer + payee + locks == deposit` without overflow.
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
    for (i, lock) in decoded.locks.iter().enumerate() {
        if lock.hash.len() != HASH_LEN {
            return Err(Error::invalid_argument(
                format!("locks[{i}].hash"),
                format!("must be {HASH_LEN} bytes, got {}", lock.hash.len()),
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
    use prost::Message;

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
