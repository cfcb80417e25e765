//! Domain-separated signing messages.
//!
//! Every signature in medledger covers `tag || 0x00 || len(chain_id) || chain_id ||
//! payload`: the tag says what kind of thing is signed, the chain id which network it is
//! for, so a signature can never be replayed as another kind of message or on another
//! chain.

use crate::error::{Error, Result};
use crate::hash::HASH_LEN;
use crate::limits::CHAIN_ID_BYTES_MAX;

/// What a signature is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Transaction,
    Vote,
    Proposal,
    ChannelState,
    /// A refund a channel's payee offers its payer.
    ChannelRefund,
    /// A request to a custodian's vault (put, fetch, erase), signed by its sender.
    VaultRequest,
    /// A channel party's request to the payee's ChannelService (read the state, ask for
    /// invoices), signed by the payer or the payee.
    ChannelRequest,
    /// A read of health metadata (consents, access events, anchors, blocks), signed by
    /// the reader so the node can tell who asks.
    ReadRequest,
    /// A governance proposal, signed by the admins of the organisations that approve it.
    Governance,
    /// A key's agreement to be enrolled by an organisation, signed by that key.
    Enrolment,
}

impl Domain {
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Self::Transaction => b"medledger/v1/tx",
            Self::Vote => b"medledger/v1/vote",
            Self::Proposal => b"medledger/v1/proposal",
            Self::ChannelState => b"medledger/v1/channel-state",
            Self::ChannelRefund => b"medledger/v1/channel-refund",
            Self::VaultRequest => b"medledger/v1/vault-request",
            Self::ChannelRequest => b"medledger/v1/channel-request",
            Self::ReadRequest => b"medledger/v1/read-request",
            Self::Governance => b"medledger/v1/governance",
            Self::Enrolment => b"medledger/v1/enrolment",
        }
    }

    /// Parses the tag's short name (`"tx"`, `"vote"`, ...).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "tx" => Ok(Self::Transaction),
            "vote" => Ok(Self::Vote),
            "proposal" => Ok(Self::Proposal),
            "channel-state" => Ok(Self::ChannelState),
            "channel-refund" => Ok(Self::ChannelRefund),
            "vault-request" => Ok(Self::VaultRequest),
            "channel-request" => Ok(Self::ChannelRequest),
            "read-request" => Ok(Self::ReadRequest),
            "governance" => Ok(Self::Governance),
            "enrolment" => Ok(Self::Enrolment),
            other => Err(Error::invalid_argument(
                "domain",
                format!(
                    "unknown domain {other:?}; expected tx, vote, proposal, channel-state, channel-refund, vault-request, channel-request, read-request, governance or enrolment"
                ),
            )),
        }
    }
}

/// Checks a chain id: 1 to `CHAIN_ID_BYTES_MAX` bytes of printable ASCII.
pub fn check_chain_id(chain_id: &str) -> Result<()> {
    if chain_id.is_empty() || chain_id.len() > CHAIN_ID_BYTES_MAX {
        return Err(Error::invalid_argument(
            "chain_id",
            format!("must be 1 to {CHAIN_ID_BYTES_MAX} bytes, got {}", chain_id.len()),
        ));
    }
    if !chain_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid_argument(
            "chain_id",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// The exact bytes that are signed for `payload` in `domain` on `chain_id`.
pub fn signing_message(domain: Domain, chain_id: &str, payload: &[u8]) -> Result<Vec<u8>> {
    check_chain_id(chain_id)?;
    let tag = domain.tag();
    let mut message = Vec::with_capacity(tag.len() + 2 + chain_id.len() + payload.len());
    message.extend_from_slice(tag);
    message.push(0);
    message.push(chain_id.len() as u8); // fits: checked against CHAIN_ID_BYTES_MAX above
    message.extend_from_slice(chain_id.as_bytes());
    message.extend_from_slice(payload);
    Ok(message)
}

/// The payload of a vote: type (1 byte) || height (u64 BE) || round (u32 BE) || block hash.
/// An empty `block_hash` is a vote for nil and is encoded as 32 zero bytes.
pub fn vote_payload(vote_type: u8, height: u64, round: u32, block_hash: &[u8]) -> Result<Vec<u8>> {
    let hash: [u8; HASH_LEN] = match block_hash.len() {
        0 => [0; HASH_LEN],
        HASH_LEN => block_hash.try_into().expect("length checked"),
        n => {
            return Err(Error::invalid_argument(
                "block_hash",
                format!("must be empty (nil) or {HASH_LEN} bytes, got {n}"),
            ))
        }
    };
    let mut payload = Vec::with_capacity(1 + 8 + 4 + HASH_LEN);
    payload.push(vote_type);
    payload.extend_from_slice(&height.to_be_bytes());
    payload.extend_from_slice(&round.to_be_bytes());
    payload.extend_from_slice(&hash);
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_message_layout_is_tag_zero_length_chain_payload() {
        let message = signing_message(Domain::Transaction, "net-1", b"body").unwrap();
        assert_eq!(message, b"medledger/v1/tx\x00\x05net-1body");
    }

    #[test]
    fn domains_and_chains_never_share_a_message() {
        let a = signing_message(Domain::Transaction, "a", b"x").unwrap();
        let b = signing_message(Domain::Vote, "a", b"x").unwrap();
        let c = signing_message(Domain::Transaction, "b", b"x").unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn chain_id_must_be_short_printable_ascii() {
        assert!(signing_message(Domain::Transaction, "", b"").is_err());
        assert!(signing_message(Domain::Transaction, &"x".repeat(65), b"").is_err());
        assert!(signing_message(Domain::Transaction, "has space", b"").is_err());
        assert!(signing_message(Domain::Transaction, &"x".repeat(64), b"").is_ok());
    }

    #[test]
    fn vote_payload_rejects_short_hash_and_encodes_nil_as_zeros() {
        assert!(vote_payload(2, 1, 0, &[1; 31]).is_err());
        let nil = vote_payload(2, 7, 3, &[]).unwrap();
        assert_eq!(nil.len(), 45);
        assert_eq!(&nil[..13], &[2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 3]);
    }
}
