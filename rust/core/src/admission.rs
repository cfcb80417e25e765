//! What a node computes once for each transaction it admits to its mempool: the
//! canonical encoding (the transaction's Merkle leaf in a block), its hash, the body's
//! hash, and the signature verdict. One call per submitted batch, so the per-transaction
//! work runs here rather than as a dozen interpreter steps per transaction.

use prost::Message;
use rayon::prelude::*;

use crate::domain::{signing_message, Domain};
use crate::ed25519;
use crate::error::Result;
use crate::hash::{sha256, Hash};
use crate::wire::SignedTransaction;

/// One transaction as admission sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Canonical encoding: unknown fields dropped, fields in number order. This is the
    /// block's Merkle leaf, so every node derives the same bytes from the same fields.
    pub encoded: Vec<u8>,
    pub tx_hash: Hash,
    pub body_hash: Hash,
    /// Whether `signature` verifies strictly for `public_key` over the chain's
    /// transaction domain and `body`.
    pub valid: bool,
}

/// Encodes, hashes and verifies `txs` (body, public key, signature) in one batch.
/// Errors only for an invalid `chain_id` or more than `VERIFY_BATCH_MAX` transactions.
pub fn admit_batch(
    chain_id: &str,
    txs: &[SignedTransaction],
    threads: Option<usize>,
) -> Result<Vec<Admission>> {
    let messages = txs
        .iter()
        .map(|tx| signing_message(Domain::Transaction, chain_id, &tx.body))
        .collect::<Result<Vec<_>>>()?;
    let keys: Vec<&[u8]> = txs.iter().map(|tx| tx.public_key.as_slice()).collect();
    let signatures: Vec<&[u8]> = txs.iter().map(|tx| tx.signature.as_slice()).collect();
    let verdicts = ed25519::verify_batch(&keys, &messages, &signatures, threads)?;
    Ok(txs
        .par_iter()
        .zip(verdicts)
        .map(|(tx, valid)| {
            let encoded = tx.encode_to_vec();
            Admission {
                tx_hash: sha256(&encoded),
                body_hash: sha256(&tx.body),
                encoded,
                valid,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tx_hash;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(key: &SigningKey, chain_id: &str, body: &[u8]) -> SignedTransaction {
        let message = signing_message(Domain::Transaction, chain_id, body).unwrap();
        SignedTransaction {
            body: body.to_vec(),
            public_key: key.verifying_key().to_bytes().to_vec(),
            signature: key.sign(&message).to_bytes().to_vec(),
        }
    }

    #[test]
    fn each_transaction_gets_its_canonical_hashes_and_own_verdict() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let good = signed(&key, "chain-a", b"body one");
        let mut forged = signed(&key, "chain-a", b"body two");
        forged.body = b"body two, altered".to_vec();
        let other_chain = signed(&key, "chain-b", b"body three");
        let admitted = admit_batch("chain-a", &[good.clone(), forged, other_chain], None).unwrap();
        let verdicts: Vec<bool> = admitted.iter().map(|a| a.valid).collect();
        assert_eq!(verdicts, vec![true, false, false]);
        assert_eq!(admitted[0].encoded, good.encode_to_vec());
        assert_eq!(admitted[0].tx_hash, tx_hash(&good));
        assert_eq!(admitted[0].body_hash, sha256(b"body one"));
    }

    #[test]
    fn a_malformed_key_or_signature_is_a_false_verdict_not_an_error() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut short_key = signed(&key, "chain-a", b"x");
        short_key.public_key.truncate(31);
        let mut short_signature = signed(&key, "chain-a", b"y");
        short_signature.signature.truncate(10);
        let admitted = admit_batch("chain-a", &[short_key, short_signature], None).unwrap();
        assert!(admitted.iter().all(|a| !a.valid));
    }

    #[test]
    fn an_invalid_chain_id_is_an_error() {
        assert!(admit_batch("", &[SignedTransaction::default()], None).is_err());
    }
}
