//! Block validation: everything a node checks before it applies a block it did not make.
//!
//! Rules, in the order they are checked (each failure names its field):
//! 1. size and shape: `block` within `BLOCK_BYTES_MAX`, decodes, has a header, at most
//!    `BLOCK_TXS_MAX` transactions of at most `TX_BYTES_MAX` each;
//! 2. header links: `chain_id`, `height`, `parent_hash`, `tx_count`, `validators_hash`,
//!    `proposer` (a member of the set), and `app_hash` when the caller knows it;
//! 3. `tx_root` is the RFC 9162 root over the canonical encoding of every transaction;
//! 4. the commit certificate is for this height and block hash, names each validator at
//!    most once, and carries more than 2/3 of the voting power;
//! 5. every transaction signature (except those the caller already verified) and every
//!    commit signature verifies strictly — all in one parallel batch.

use std::collections::HashSet;

use prost::Message;
use rayon::prelude::*;

use crate::domain::{signing_message, vote_payload, Domain};
use crate::ed25519::{self, PUBLIC_KEY_LEN};
use crate::error::{Error, Result};
use crate::hash::{sha256, sha256_parts, to_hex, Hash, HASH_LEN};
use crate::limits::{BLOCK_BYTES_MAX, BLOCK_TXS_MAX, TX_BYTES_MAX, VALIDATORS_MAX};
use crate::merkle;
use crate::parallel::run_with_threads;
use crate::wire::{self, Block, BlockHeader, CommitCertificate, VoteType};

/// The largest commit certificate: every validator's index and signature, with framing.
const COMMIT_BYTES_MAX: usize = 64 + VALIDATORS_MAX * 80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    pub public_key: [u8; PUBLIC_KEY_LEN],
    pub voting_power: u64,
}

/// A validator set fixed by genesis: who may sign commits, and with what weight.
#[derive(Debug, Clone)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_power: u64,
    hash: Hash,
}

impl ValidatorSet {
    /// Checks and builds a set: 1 to `VALIDATORS_MAX` members, valid distinct keys,
    /// positive powers whose sum fits in a u64.
    pub fn new(members: &[(&[u8], u64)]) -> Result<Self> {
        if members.is_empty() || members.len() > VALIDATORS_MAX {
            return Err(Error::invalid_argument(
                "validators",
                format!("must have 1 to {VALIDATORS_MAX} members, got {}", members.len()),
            ));
        }
        let mut seen = HashSet::new();
        let mut validators = Vec::with_capacity(members.len());
        let mut total_power: u64 = 0;
        for (i, (key, power)) in members.iter().enumerate() {
            let public_key: [u8; PUBLIC_KEY_LEN] = (*key).try_into().map_err(|_| {
                Error::invalid_argument(
                    format!("validators[{i}].public_key"),
                    format!("must be {PUBLIC_KEY_LEN} bytes, got {}", key.len()),
                )
            })?;
            if !seen.insert(public_key) {
                return Err(Error::invalid_argument(
                    format!("validators[{i}].public_key"),
                    "duplicate key",
                ));
            }
            if *power == 0 {
                return Err(Error::invalid_argument(
                    format!("validators[{i}].voting_power"),
                    "must be positive",
                ));
            }
            total_power = total_power
                .checked_add(*power)
                .ok_or_else(|| Error::invalid_argument("validators", "total voting power overflows u64"))?;
            validators.push(Validator {
                public_key,
                voting_power: *power,
            });
        }
        let mut parts: Vec<Vec<u8>> = Vec::with_capacity(validators.len());
        for v in &validators {
            let mut part = v.public_key.to_vec();
            part.extend_from_slice(&v.voting_power.to_be_bytes());
            parts.push(part);
        }
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let hash = sha256_parts(&slices);
        Ok(Self {
            validators,
            total_power,
            hash,
        })
    }

    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    /// SHA-256 over each member's key and big-endian power, in order.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    fn contains_key(&self, key: &[u8]) -> bool {
        self.validators.iter().any(|v| v.public_key == key)
    }
}

/// What the caller knows about the block it expects next.
#[derive(Debug)]
pub struct Expectations<'a> {
    pub chain_id: &'a str,
    pub height: u64,
    pub parent_hash: Hash,
    pub validators: &'a ValidatorSet,
    /// When known, the validator set of the next height, whose hash the header must carry
    /// (`next_validators_hash`).
    pub next_validators: Option<&'a ValidatorSet>,
    /// When known, the app hash the header must carry.
    pub app_hash: Option<Hash>,
    /// Transactions (by hash) whose signatures this node already verified.
    pub verified_tx_hashes: Option<&'a HashSet<Hash>>,
    pub threads: Option<usize>,
}

/// A block that passed every rule.
#[derive(Debug, Clone)]
pub struct ValidatedBlock {
    pub block_hash: Hash,
    pub header: BlockHeader,
    pub tx_hashes: Vec<Hash>,
    /// How many transaction signatures were verified (the others were already known).
    pub tx_signatures_verified: usize,
}

/// The hashes cover decoded parts, so bytes that decode to the same parts (unknown fields,
/// another field order) would pass as the same block while carrying anything: a node
/// would store and serve an attacker's padding under an honest block. Only the canonical
/// encoding is accepted.
fn check_canonical<M: Message>(field: &str, decoded: &M, bytes: &[u8]) -> Result<()> {
    if decoded.encode_to_vec() != bytes {
        return Err(Error::invalid_block(
            field,
            "is not in its canonical encoding (unknown fields, or fields out of order)",
        ));
    }
    Ok(())
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(field: &str, expected: &T, actual: &T) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::invalid_block(
            field,
            format!("expected {expected:?}, got {actual:?}"),
        ))
    }
}

fn hash_field(field: &str, bytes: &[u8]) -> Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| Error::invalid_block(field, format!("must be {HASH_LEN} bytes, got {}", bytes.len())))
}

fn check_header(header: &BlockHeader, tx_count: usize, expect: &Expectations<'_>) -> Result<()> {
    expect_eq("header.chain_id", &expect.chain_id, &header.chain_id.as_str())?;
    expect_eq("header.height", &expect.height, &header.height)?;
    let parent_hash = hash_field("header.parent_hash", &header.parent_hash)?;
    if parent_hash != expect.parent_hash {
        return Err(Error::invalid_block(
            "header.parent_hash",
            format!(
                "expected {}, got {}",
                to_hex(&expect.parent_hash),
                to_hex(&parent_hash)
            ),
        ));
    }
    expect_eq("header.tx_count", &(tx_count as u64), &u64::from(header.tx_count))?;
    let validators_hash = hash_field("header.validators_hash", &header.validators_hash)?;
    if validators_hash != expect.validators.hash() {
        return Err(Error::invalid_block(
            "header.validators_hash",
            "does not match the validator set this block must be signed by",
        ));
    }
    if let Some(next) = expect.next_validators {
        let next_hash = hash_field("header.next_validators_hash", &header.next_validators_hash)?;
        if next_hash != next.hash() {
            return Err(Error::invalid_block(
                "header.next_validators_hash",
                "does not match the validator set of the next height",
            ));
        }
    }
    if !expect.validators.contains_key(&header.proposer) {
        return Err(Error::invalid_block(
            "header.proposer",
            "is not a member of the validator set",
        ));
    }
    if let Some(app_hash) = expect.app_hash {
        if header.app_hash != app_hash {
            return Err(Error::invalid_block(
                "header.app_hash",
                format!("expected {}, got {}", to_hex(&app_hash), to_hex(&header.app_hash)),
            ));
        }
    }
    Ok(())
}

/// Checks the certificate's shape and quorum; returns (validator index, signature) pairs
/// for the signature check.
fn check_commit_quorum<'c>(
    commit: &'c CommitCertificate,
    header: &BlockHeader,
    block_hash: &Hash,
    validators: &ValidatorSet,
) -> Result<Vec<(usize, &'c [u8])>> {
    expect_eq("commit.height", &header.height, &commit.height)?;
    if commit.block_hash != block_hash {
        return Err(Error::invalid_block(
            "commit.block_hash",
            format!(
                "expected {}, got {}",
                to_hex(block_hash),
                to_hex(&commit.block_hash)
            ),
        ));
    }
    if commit.signatures.len() > validators.validators().len() {
        return Err(Error::limit(
            "commit.signatures",
            "validator set size",
            validators.validators().len(),
            commit.signatures.len(),
        ));
    }
    let mut signed = vec![false; validators.validators().len()];
    let mut power: u64 = 0;
    let mut entries = Vec::with_capacity(commit.signatures.len());
    for (i, signature) in commit.signatures.iter().enumerate() {
        let index = signature.validator_index as usize;
        let field = format!("commit.signatures[{i}].validator_index");
        let Some(validator) = validators.validators().get(index) else {
            return Err(Error::invalid_block(
                field,
                format!("no validator has index {index}"),
            ));
        };
        if std::mem::replace(&mut signed[index], true) {
            return Err(Error::invalid_block(
                field,
                format!("validator {index} signs twice"),
            ));
        }
        // Cannot overflow: the set's total fits in u64.
        power += validator.voting_power;
        entries.push((index, signature.signature.as_slice()));
    }
    // More than 2/3 of the total, in u128 so 3 * power cannot overflow.
    if u128::from(power) * 3 <= u128::from(validators.total_power()) * 2 {
        return Err(Error::invalid_block(
            "commit.signatures",
            format!(
                "voting power {power} of {} is not more than 2/3",
                validators.total_power()
            ),
        ));
    }
    Ok(entries)
}

/// Verifies, in one parallel batch, every transaction signature the caller has not already
/// verified and every commit signature. Returns how many transaction signatures it checked.
fn verify_signatures(
    block: &Block,
    tx_hashes: &[Hash],
    commit: Option<&CommitCertificate>,
    commit_entries: &[(usize, &[u8])],
    block_hash: &Hash,
    expect: &Expectations<'_>,
) -> Result<usize> {
    let to_verify: Vec<usize> = (0..block.txs.len())
        .filter(|&i| {
            expect
                .verified_tx_hashes
                .is_none_or(|known| !known.contains(&tx_hashes[i]))
        })
        .collect();
    let mut keys: Vec<&[u8]> = Vec::with_capacity(to_verify.len() + commit_entries.len());
    let mut signatures: Vec<&[u8]> = Vec::with_capacity(keys.capacity());
    let mut messages: Vec<Vec<u8>> = to_verify
        .par_iter()
        .map(|&i| signing_message(Domain::Transaction, expect.chain_id, &block.txs[i].body))
        .collect::<Result<_>>()?;
    for &i in &to_verify {
        keys.push(&block.txs[i].public_key);
        signatures.push(&block.txs[i].signature);
    }
    if let Some(commit) = commit {
        let vote = vote_payload(VoteType::Precommit as u8, commit.height, commit.round, block_hash)?;
        let vote_message = signing_message(Domain::Vote, expect.chain_id, &vote)?;
        for (index, signature) in commit_entries {
            keys.push(&expect.validators.validators()[*index].public_key);
            signatures.push(signature);
            messages.push(vote_message.clone());
        }
    }
    let verdicts = ed25519::verify_batch(&keys, &messages, &signatures, None)?;
    let bad: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, ok)| !**ok)
        .map(|(i, _)| i)
        .collect();
    if let Some(&first) = bad.first() {
        let field = if first < to_verify.len() {
            format!("txs[{}].signature", to_verify[first])
        } else {
            format!("commit.signatures[{}].signature", first - to_verify.len())
        };
        return Err(Error::invalid_block(
            field,
            format!("does not verify ({} bad signature(s) in the block)", bad.len()),
        ));
    }
    Ok(to_verify.len())
}

/// An encoded block within the limits, decoded from its canonical encoding, with a
/// header: what both `block_id` and `validate_block` start from.
fn decode_block(block_bytes: &[u8]) -> Result<Block> {
    if block_bytes.len() > BLOCK_BYTES_MAX {
        return Err(Error::limit(
            "block",
            "BLOCK_BYTES_MAX",
            BLOCK_BYTES_MAX,
            block_bytes.len(),
        ));
    }
    let block: Block = wire::decode("block", block_bytes)?;
    check_canonical("block", &block, block_bytes)?;
    if block.header.is_none() {
        return Err(Error::invalid_block("header", "is missing"));
    }
    if block.txs.len() > BLOCK_TXS_MAX {
        return Err(Error::limit(
            "txs",
            "BLOCK_TXS_MAX",
            BLOCK_TXS_MAX,
            block.txs.len(),
        ));
    }
    Ok(block)
}

/// The value id an encoded block stands for: the hash of its header, once its
/// transactions are checked to be those the header's `tx_root` commits to. A proposal's
/// signature covers only the id, so a node binds the bytes to the id with this before it
/// hands them to consensus: other bytes under a signed id are refused here.
pub fn block_id(block_bytes: &[u8]) -> Result<Hash> {
    let block = decode_block(block_bytes)?;
    let header = block
        .header
        .as_ref()
        .expect("decode_block checks the header is there");
    let leaf_hashes: Vec<Hash> = block
        .txs
        .par_iter()
        .map(|tx| merkle::leaf_hash(&tx.encode_to_vec()))
        .collect();
    if merkle::root_from_leaf_hashes(leaf_hashes) != header.tx_root.as_slice() {
        return Err(Error::invalid_block(
            "header.tx_root",
            "the transactions do not hash to it",
        ));
    }
    Ok(wire::header_hash(header))
}

/// Validates an encoded block against its encoded commit certificate. See the module
/// documentation for the rules.
///
/// `commit_bytes` is `None` for a proposal, which has no certificate yet: every rule but
/// the commit's is checked.
pub fn validate_block(
    block_bytes: &[u8],
    commit_bytes: Option<&[u8]>,
    expect: &Expectations<'_>,
) -> Result<ValidatedBlock> {
    if let Some(commit_bytes) = commit_bytes {
        if commit_bytes.len() > COMMIT_BYTES_MAX {
            return Err(Error::limit(
                "commit",
                "COMMIT_BYTES_MAX",
                COMMIT_BYTES_MAX,
                commit_bytes.len(),
            ));
        }
    }
    let block = decode_block(block_bytes)?;
    let commit: Option<CommitCertificate> = commit_bytes
        .map(|bytes| wire::decode("commit", bytes))
        .transpose()?;
    if let (Some(commit), Some(bytes)) = (&commit, commit_bytes) {
        check_canonical("commit", commit, bytes)?;
    }
    let header = block
        .header
        .as_ref()
        .expect("decode_block checks the header is there");
    check_header(header, block.txs.len(), expect)?;

    run_with_threads(expect.threads, || {
        // Canonical encodings: the Merkle leaves, and the source of each tx hash.
        let encoded: Vec<Vec<u8>> = block.txs.par_iter().map(Message::encode_to_vec).collect();
        if let Some((i, tx)) = encoded.iter().enumerate().find(|(_, tx)| tx.len() > TX_BYTES_MAX) {
            return Err(Error::limit(
                format!("txs[{i}]"),
                "TX_BYTES_MAX",
                TX_BYTES_MAX,
                tx.len(),
            ));
        }
        let (tx_hashes, leaf_hashes): (Vec<Hash>, Vec<Hash>) = encoded
            .par_iter()
            .map(|tx| (sha256(tx), merkle::leaf_hash(tx)))
            .unzip();
        let tx_root = merkle::root_from_leaf_hashes(leaf_hashes);
        if header.tx_root != tx_root {
            return Err(Error::invalid_block(
                "header.tx_root",
                format!(
                    "is {} but the transactions hash to {}",
                    to_hex(&header.tx_root),
                    to_hex(&tx_root)
                ),
            ));
        }
        let block_hash = wire::header_hash(header);
        let commit_entries = match &commit {
            Some(commit) => check_commit_quorum(commit, header, &block_hash, expect.validators)?,
            None => Vec::new(),
        };

        let tx_signatures_verified = verify_signatures(
            &block,
            &tx_hashes,
            commit.as_ref(),
            &commit_entries,
            &block_hash,
            expect,
        )?;
        Ok(ValidatedBlock {
            block_hash,
            header: header.clone(),
            tx_hashes,
            tx_signatures_verified,
        })
    })?
}
