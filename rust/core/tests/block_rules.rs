//! `validate_block`: one test per rule, each breaking exactly that rule and checking that
//! the error names the field.

mod common;

use std::collections::HashSet;

use common::{field_of, signed_tx, Fixture, CHAIN_ID};
use medledger_core::block::{block_id, validate_block, Expectations, ValidatedBlock};
use medledger_core::hash::Hash;
use medledger_core::limits::{BLOCK_BYTES_MAX, BLOCK_TXS_MAX, TX_BYTES_MAX};
use medledger_core::wire::{self, Block, CommitCertificate, SignedTransaction};
use medledger_core::{Error, Result};
use prost::Message;

fn expectations(fixture: &Fixture) -> Expectations<'_> {
    Expectations {
        chain_id: CHAIN_ID,
        height: fixture.height,
        parent_hash: fixture.parent_hash,
        validators: &fixture.validators,
        next_validators: Some(&fixture.validators),
        app_hash: None,
        verified_tx_hashes: None,
        threads: None,
    }
}

fn check(fixture: &Fixture, block: &Block, commit: &CommitCertificate) -> Result<ValidatedBlock> {
    validate_block(
        &block.encode_to_vec(),
        Some(&commit.encode_to_vec()),
        &expectations(fixture),
    )
}

/// A block and a commit by validators 0, 1, 2 of 4 (30 of 40 power).
fn valid(fixture: &Fixture, tx_count: usize) -> (Block, CommitCertificate) {
    let block = fixture.block(fixture.txs(tx_count));
    let commit = fixture.commit(&block, &[0, 1, 2]);
    (block, commit)
}

fn assert_invalid_field(result: Result<ValidatedBlock>, field: &str) -> Error {
    let error = result.expect_err("block should be rejected");
    assert_eq!(field_of(&error), field, "{error}");
    error
}

/// Re-signs the commit after a header edit, so only the edited rule is broken.
fn with_header(
    fixture: &Fixture,
    mut block: Block,
    edit: impl FnOnce(&mut wire::BlockHeader),
) -> (Block, CommitCertificate) {
    edit(block.header.as_mut().unwrap());
    let commit = fixture.commit(&block, &[0, 1, 2]);
    (block, commit)
}

#[test]
fn a_valid_block_passes_and_reports_its_hashes() {
    let fixture = Fixture::new(4);
    let (block, commit) = valid(&fixture, 50);
    let validated = check(&fixture, &block, &commit).unwrap();
    assert_eq!(
        validated.block_hash,
        wire::header_hash(block.header.as_ref().unwrap())
    );
    assert_eq!(validated.tx_hashes.len(), 50);
    assert_eq!(validated.tx_hashes[3], wire::tx_hash(&block.txs[3]));
    assert_eq!(validated.tx_signatures_verified, 50);
}

#[test]
fn an_empty_block_passes() {
    let fixture = Fixture::new(4);
    let (block, commit) = valid(&fixture, 0);
    check(&fixture, &block, &commit).unwrap();
}

#[test]
fn block_bytes_over_the_limit_are_refused_before_decoding() {
    let fixture = Fixture::new(1);
    let oversized = vec![0u8; BLOCK_BYTES_MAX + 1];
    let error = validate_block(&oversized, Some(&[]), &expectations(&fixture)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                limit_name: "BLOCK_BYTES_MAX",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(field_of(&error), "block");
}

#[test]
fn garbage_block_bytes_are_a_decode_error() {
    let fixture = Fixture::new(1);
    let error = validate_block(&[0x0a, 0xff, 0x01], Some(&[]), &expectations(&fixture)).unwrap_err();
    assert!(matches!(error, Error::Decode { .. }), "{error}");
    assert_eq!(field_of(&error), "block");
}

#[test]
fn garbage_commit_bytes_are_a_decode_error() {
    let fixture = Fixture::new(4);
    let (block, _) = valid(&fixture, 1);
    let error = validate_block(
        &block.encode_to_vec(),
        Some(&[0x1a, 0x40]),
        &expectations(&fixture),
    )
    .unwrap_err();
    assert!(matches!(error, Error::Decode { .. }), "{error}");
    assert_eq!(field_of(&error), "commit");
}

#[test]
fn a_block_without_header_is_invalid() {
    let fixture = Fixture::new(4);
    let (mut block, commit) = valid(&fixture, 1);
    block.header = None;
    assert_invalid_field(check(&fixture, &block, &commit), "header");
}

#[test]
fn too_many_transactions_exceed_block_txs_max() {
    let fixture = Fixture::new(4);
    let tx = SignedTransaction::default();
    let block = fixture.block(vec![tx; BLOCK_TXS_MAX + 1]);
    let commit = fixture.commit(&block, &[0, 1, 2]);
    let error = assert_invalid_field(check(&fixture, &block, &commit), "txs");
    assert!(matches!(
        error,
        Error::LimitExceeded {
            limit_name: "BLOCK_TXS_MAX",
            ..
        }
    ));
}

#[test]
fn an_oversized_transaction_exceeds_tx_bytes_max() {
    let fixture = Fixture::new(4);
    let mut txs = fixture.txs(3);
    txs[1] = signed_tx(&fixture.clients[0], CHAIN_ID, &vec![1u8; TX_BYTES_MAX]);
    let block = fixture.block(txs);
    let commit = fixture.commit(&block, &[0, 1, 2]);
    let error = assert_invalid_field(check(&fixture, &block, &commit), "txs[1]");
    assert!(matches!(
        error,
        Error::LimitExceeded {
            limit_name: "TX_BYTES_MAX",
            ..
        }
    ));
}

#[test]
fn a_header_for_another_chain_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, _) = valid(&fixture, 2);
    let (block, commit) = with_header(&fixture, block, |h| h.chain_id = "other-chain".into());
    assert_invalid_field(check(&fixture, &block, &commit), "header.chain_id");
}

#[test]
fn a_header_at_the_wrong_height_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, _) = valid(&fixture, 2);
    let (block, commit) = with_header(&fixture, block, |h| h.height += 1);
    assert_invalid_field(check(&fixture, &block, &commit), "header.height");
}

#[test]
fn a_header_with_the_wrong_parent_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, _) = valid(&fixture, 2);
    let (block, commit) = with_header(&fixture, block, |h| h.parent_hash[0] ^= 1);
    assert_invalid_field(check(&fixture, &block, &commit), "header.parent_hash");
}

#[test]
fn a_header_whose_tx_count_disagrees_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, _) = valid(&fixture, 2);
    let (block, commit) = with_header(&fixture, block, |h| h.tx_count = 3);
    assert_invalid_field(check(&fixture, &block, &commit), "header.tx_count");
}

#[test]
fn a_header_naming_another_validator_set_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, _) = valid(&fixture, 2);
    let (block, commit) = with_header(&fixture, block, |h| h.validators_hash = vec![0; 32]);
    assert_invalid_field(check(&fixture, &block, &commit), "header.validators_hash");
}

#[test]
fn a_header_naming_another_next_validator_set_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, _) = valid(&fixture, 2);
    let (block, commit) = with_header(&fixture, block, |h| h.next_validators_hash = vec![0; 32]);
    assert_invalid_field(check(&fixture, &block, &commit), "header.next_validators_hash");
    // A verifier that does not know the next set (a light client) does not check it.
    let mut expect = expectations(&fixture);
    expect.next_validators = None;
    let encoded = (block.encode_to_vec(), commit.encode_to_vec());
    assert!(validate_block(&encoded.0, Some(&encoded.1), &expect).is_ok());
}

#[test]
fn a_proposer_outside_the_validator_set_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, _) = valid(&fixture, 2);
    let outsider = fixture.clients[0].public_key().to_vec();
    let (block, commit) = with_header(&fixture, block, |h| h.proposer = outsider);
    assert_invalid_field(check(&fixture, &block, &commit), "header.proposer");
}

#[test]
fn an_unexpected_app_hash_is_invalid_when_the_caller_knows_it() {
    let fixture = Fixture::new(4);
    let (block, commit) = valid(&fixture, 2);
    let mut expect = expectations(&fixture);
    expect.app_hash = Some([4; 32]);
    let result = validate_block(&block.encode_to_vec(), Some(&commit.encode_to_vec()), &expect);
    assert_invalid_field(result, "header.app_hash");
    expect.app_hash = Some([3; 32]);
    validate_block(&block.encode_to_vec(), Some(&commit.encode_to_vec()), &expect).unwrap();
}

#[test]
fn reordered_transactions_break_the_tx_root() {
    let fixture = Fixture::new(4);
    let (mut block, commit) = valid(&fixture, 5);
    block.txs.swap(1, 3);
    assert_invalid_field(check(&fixture, &block, &commit), "header.tx_root");
}

#[test]
fn a_bad_transaction_signature_is_named_by_index() {
    let fixture = Fixture::new(4);
    let mut txs = fixture.txs(300);
    txs[217].signature[10] ^= 0x40;
    let block = fixture.block(txs);
    let commit = fixture.commit(&block, &[0, 1, 2]);
    assert_invalid_field(check(&fixture, &block, &commit), "txs[217].signature");
}

#[test]
fn a_transaction_signed_for_another_chain_fails_its_signature() {
    let fixture = Fixture::new(4);
    let mut txs = fixture.txs(4);
    txs[2] = signed_tx(&fixture.clients[1], "another-chain", b"replayed body");
    let block = fixture.block(txs);
    let commit = fixture.commit(&block, &[0, 1, 2]);
    assert_invalid_field(check(&fixture, &block, &commit), "txs[2].signature");
}

#[test]
fn already_verified_transactions_are_not_verified_again() {
    let fixture = Fixture::new(4);
    let (block, commit) = valid(&fixture, 10);
    let known: HashSet<Hash> = block.txs[..6].iter().map(wire::tx_hash).collect();
    let mut expect = expectations(&fixture);
    expect.verified_tx_hashes = Some(&known);
    let validated = validate_block(&block.encode_to_vec(), Some(&commit.encode_to_vec()), &expect).unwrap();
    assert_eq!(validated.tx_signatures_verified, 4);
}

#[test]
fn a_commit_for_another_height_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, mut commit) = valid(&fixture, 2);
    commit.height += 1;
    assert_invalid_field(check(&fixture, &block, &commit), "commit.height");
}

#[test]
fn a_commit_for_another_block_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, mut commit) = valid(&fixture, 2);
    commit.block_hash[0] ^= 1;
    assert_invalid_field(check(&fixture, &block, &commit), "commit.block_hash");
}

#[test]
fn a_commit_naming_an_unknown_validator_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, mut commit) = valid(&fixture, 2);
    commit.signatures[1].validator_index = 4;
    assert_invalid_field(
        check(&fixture, &block, &commit),
        "commit.signatures[1].validator_index",
    );
}

#[test]
fn a_validator_counted_twice_is_invalid() {
    let fixture = Fixture::new(4);
    let block = fixture.block(fixture.txs(2));
    let commit = fixture.commit(&block, &[0, 1, 1]);
    assert_invalid_field(
        check(&fixture, &block, &commit),
        "commit.signatures[2].validator_index",
    );
}

#[test]
fn exactly_two_thirds_of_the_power_is_not_a_quorum() {
    // Three validators of power 10: two of them are exactly 2/3, not more.
    let fixture = Fixture::new(3);
    let block = fixture.block(fixture.txs(2));
    let commit = fixture.commit(&block, &[0, 2]);
    assert_invalid_field(check(&fixture, &block, &commit), "commit.signatures");
    let commit = fixture.commit(&block, &[0, 1, 2]);
    check(&fixture, &block, &commit).unwrap();
}

#[test]
fn a_bad_commit_signature_is_named_by_index() {
    let fixture = Fixture::new(4);
    let (block, mut commit) = valid(&fixture, 3);
    commit.signatures[2].signature[40] ^= 1;
    assert_invalid_field(check(&fixture, &block, &commit), "commit.signatures[2].signature");
}

#[test]
fn a_commit_signature_for_another_round_is_invalid() {
    let fixture = Fixture::new(4);
    let (block, mut commit) = valid(&fixture, 3);
    commit.round = 1; // the votes were cast in round 0
    assert_invalid_field(check(&fixture, &block, &commit), "commit.signatures[0].signature");
}

#[test]
fn one_or_two_threads_give_the_same_result() {
    let fixture = Fixture::new(4);
    let (block, commit) = valid(&fixture, 100);
    for threads in [Some(1), Some(2)] {
        let mut expect = expectations(&fixture);
        expect.threads = threads;
        let validated =
            validate_block(&block.encode_to_vec(), Some(&commit.encode_to_vec()), &expect).unwrap();
        assert_eq!(validated.tx_hashes.len(), 100);
    }
}

#[test]
fn a_proposal_is_checked_by_every_rule_but_the_commit() {
    let fixture = Fixture::new(4);
    let block = fixture.block(fixture.txs(20));
    let validated = validate_block(&block.encode_to_vec(), None, &expectations(&fixture)).unwrap();
    assert_eq!(validated.tx_signatures_verified, 20);
    let mut txs = fixture.txs(20);
    txs[4].signature[0] ^= 1;
    let bad = fixture.block(txs);
    assert_invalid_field(
        validate_block(&bad.encode_to_vec(), None, &expectations(&fixture)),
        "txs[4].signature",
    );
}

#[test]
fn a_block_id_is_its_header_hash_once_its_transactions_match_the_root() {
    let fixture = Fixture::new(4);
    let (block, commit) = valid(&fixture, 5);
    let validated = check(&fixture, &block, &commit).unwrap();
    assert_eq!(block_id(&block.encode_to_vec()).unwrap(), validated.block_hash);
}

#[test]
fn other_transactions_under_a_header_have_no_block_id() {
    let fixture = Fixture::new(4);
    let (mut block, _) = valid(&fixture, 5);
    block.txs.swap(0, 1);
    let error = block_id(&block.encode_to_vec()).unwrap_err();
    assert_eq!(field_of(&error), "header.tx_root");
    block.txs.truncate(1);
    assert_eq!(
        field_of(&block_id(&block.encode_to_vec()).unwrap_err()),
        "header.tx_root"
    );
    assert!(block_id(b"\x0a\xff\xff").is_err());
    assert_eq!(
        field_of(&block_id(&Block::default().encode_to_vec()).unwrap_err()),
        "header"
    );
}

#[test]
fn padded_block_or_commit_bytes_are_refused_though_their_hashes_match() {
    // An unknown field appended to honest bytes decodes to the same parts and hashes the
    // same: a relayer could make nodes store anything under an honest block.
    let fixture = Fixture::new(4);
    let (block, commit) = valid(&fixture, 3);
    let mut padded = block.encode_to_vec();
    padded.extend_from_slice(&[0xfa, 0x3e, 0x04, b'j', b'u', b'n', b'k']); // field 999, 4 bytes
    assert_eq!(field_of(&block_id(&padded).unwrap_err()), "block");
    let error = validate_block(&padded, Some(&commit.encode_to_vec()), &expectations(&fixture)).unwrap_err();
    assert_eq!(field_of(&error), "block");
    let mut padded_commit = commit.encode_to_vec();
    padded_commit.extend_from_slice(&[0xfa, 0x3e, 0x00]);
    let error = validate_block(
        &block.encode_to_vec(),
        Some(&padded_commit),
        &expectations(&fixture),
    )
    .unwrap_err();
    assert_eq!(field_of(&error), "commit");
}
