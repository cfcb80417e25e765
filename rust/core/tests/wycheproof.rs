//! Wycheproof Ed25519 vectors: every one of them must get its expected verdict, alone
//! and inside one batch.

mod common;

use medledger_core::ed25519::{verify, verify_batch};

struct Case {
    id: u64,
    comment: String,
    public_key: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
    valid: bool,
}

fn cases() -> Vec<Case> {
    let vectors = common::read_json("wycheproof/ed25519_test.json");
    let mut cases = Vec::new();
    for group in vectors["testGroups"].as_array().unwrap() {
        let public_key = hex::decode(group["publicKey"]["pk"].as_str().unwrap()).unwrap();
        for test in group["tests"].as_array().unwrap() {
            let result = test["result"].as_str().unwrap();
            assert!(
                result == "valid" || result == "invalid",
                "no 'acceptable' cases expected"
            );
            cases.push(Case {
                id: test["tcId"].as_u64().unwrap(),
                comment: test["comment"].as_str().unwrap().to_owned(),
                public_key: public_key.clone(),
                message: hex::decode(test["msg"].as_str().unwrap()).unwrap(),
                signature: hex::decode(test["sig"].as_str().unwrap()).unwrap(),
                valid: result == "valid",
            });
        }
    }
    assert_eq!(cases.len(), vectors["numberOfTests"].as_u64().unwrap() as usize);
    cases
}

#[test]
fn every_wycheproof_vector_gets_its_verdict_from_verify() {
    let cases = cases();
    assert_eq!(cases.len(), 151);
    for case in &cases {
        assert_eq!(
            verify(&case.public_key, &case.message, &case.signature),
            case.valid,
            "tcId {} ({})",
            case.id,
            case.comment
        );
    }
}

#[test]
fn every_wycheproof_vector_gets_its_verdict_from_one_batch() {
    let cases = cases();
    let keys: Vec<&[u8]> = cases.iter().map(|c| c.public_key.as_slice()).collect();
    let messages: Vec<&[u8]> = cases.iter().map(|c| c.message.as_slice()).collect();
    let signatures: Vec<&[u8]> = cases.iter().map(|c| c.signature.as_slice()).collect();
    for threads in [Some(1), Some(2), None] {
        let verdicts = verify_batch(&keys, &messages, &signatures, threads).unwrap();
        for (case, verdict) in cases.iter().zip(verdicts) {
            assert_eq!(
                verdict, case.valid,
                "tcId {} ({}), threads {threads:?}",
                case.id, case.comment
            );
        }
    }
}
