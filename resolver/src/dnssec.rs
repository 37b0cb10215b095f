//! DNSSEC validation of the GNS zone's answers, when a trust anchor is configured
//! (`dns://...&trust-anchor=/path`): the zone's DNSKEY RRset must be signed by an anchor key,
//! and every TXT RRset the resolver uses must be signed by a key of that set, with signatures
//! in their validity period. Queries go over TCP straight to the configured server with the
//! DO bit set, so nothing on the way (a cache, a forwarder) is trusted.
//!
//! The anchor file holds the zone's key-signing key(s) as a DNSKEY line, as `dnssec-keygen`
//! writes a `K<zone>.+013+<tag>.key` file or `dig DNSKEY <zone>` prints it:
//! `gns.example. 3600 IN DNSKEY 257 3 13 <base64>`.
//!
//! Limit: an answer without data (NXDOMAIN, NODATA) is not authenticated (NSEC/NSEC3 are not
//! checked). A party on the way can hide a record, which a reader sees as "not in the GNS"; it
//! cannot make a reader accept a record or binding the zone did not sign.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::dnssec::rdata::{DNSKEY, DNSSECRData, RRSIG};
use hickory_proto::rr::dnssec::{Algorithm, Verifier};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// How long a validated DNSKEY set is used before it is fetched (and validated) again.
const KEYS_LIFETIME: Duration = Duration::from_secs(60);
/// Largest anchor file read.
const MAX_ANCHOR_FILE: u64 = 64 * 1024;

/// Why DNSSEC validation refused an answer, or the anchor cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnssecError {
    #[error(
        "trust anchor {path}: {reason} (expected a DNSKEY line of the zone, as `dig DNSKEY ZONE` prints or dnssec-keygen writes in K<zone>.+alg+tag.key)"
    )]
    Anchor { path: PathBuf, reason: String },
    #[error(
        "DNSSEC: the DNSKEY set of zone {zone} is not signed by the configured trust anchor ({reason}); the server is not the zone's, or the anchor is out of date (rolled key)"
    )]
    KeysNotAnchored { zone: String, reason: String },
    #[error(
        "DNSSEC: the answer for {name} is not signed by the zone's keys ({reason}): it was altered or made up outside the zone; refusing it"
    )]
    Bogus { name: String, reason: String },
}

/// The configured anchor and the DNSKEY set validated with it.
#[derive(Debug)]
pub(crate) struct Validator {
    zone: Name,
    anchors: Vec<DNSKEY>,
    keys: Mutex<Option<(Instant, Vec<DNSKEY>)>>,
}

impl Validator {
    pub(crate) fn from_file(path: &Path, zone: &Name) -> Result<Validator, DnssecError> {
        use std::io::Read;
        let bad = |reason: String| DnssecError::Anchor {
            path: path.to_owned(),
            reason,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_ANCHOR_FILE).read_to_string(&mut text))
            .map_err(|e| bad(e.to_string()))?;
        let mut anchors = Vec::new();
        for line in text.lines() {
            let line = line.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let Some(at) = fields.iter().position(|f| f.eq_ignore_ascii_case("DNSKEY")) else {
                continue;
            };
            let owner = Name::from_ascii(fields[0]).map_err(|e| bad(e.to_string()))?;
            if !owner.eq_case(zone) && owner.to_lowercase() != zone.to_lowercase() {
                return Err(bad(format!("a key of {owner}, not of {zone}")));
            }
            let rest = &fields[at + 1..];
            let [flags, protocol, algorithm, key @ ..] = rest else {
                return Err(bad(
                    "a DNSKEY line is: flags protocol algorithm key".to_owned()
                ));
            };
            let flags: u16 = flags.parse().map_err(|_| bad("flags".to_owned()))?;
            if *protocol != "3" {
                return Err(bad("protocol must be 3".to_owned()));
            }
            let algorithm: u8 = algorithm.parse().map_err(|_| bad("algorithm".to_owned()))?;
            let key = data_encoding::BASE64
                .decode(key.concat().as_bytes())
                .map_err(|_| bad("the key is not base64".to_owned()))?;
            anchors.push(DNSKEY::new(
                flags & 0x0100 != 0,
                flags & 0x0001 != 0,
                flags & 0x0080 != 0,
                Algorithm::from_u8(algorithm),
                key,
            ));
        }
        if anchors.is_empty() {
            return Err(bad("no DNSKEY line".to_owned()));
        }
        Ok(Validator {
            zone: zone.clone(),
            anchors,
            keys: Mutex::new(None),
        })
    }

    /// The zone's DNSKEY set, validated with the anchor (cached for [`KEYS_LIFETIME`]).
    fn keys(
        &self,
        query: &dyn Fn(&Name, RecordType) -> Result<Message, super::dns::DnsError>,
    ) -> Result<Vec<DNSKEY>, super::dns::DnsError> {
        let mut cache = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, keys)) = cache.as_ref()
            && at.elapsed() < KEYS_LIFETIME
        {
            return Ok(keys.clone());
        }
        let not_anchored = |reason: String| DnssecError::KeysNotAnchored {
            zone: self.zone.to_string(),
            reason,
        };
        let answer = query(&self.zone, RecordType::DNSKEY)?;
        let (records, sigs) = rrset(&answer, &self.zone, RecordType::DNSKEY);
        let keys: Vec<DNSKEY> = records
            .iter()
            .filter_map(|r| match r.data() {
                Some(RData::DNSSEC(DNSSECRData::DNSKEY(k))) => Some(k.clone()),
                _ => None,
            })
            .collect();
        if keys.is_empty() {
            return Err(not_anchored(
                "the server has no DNSKEY for it: is the zone signed?".into(),
            )
            .into());
        }
        let anchored = self.anchors.iter().any(|anchor| {
            keys.iter().any(|k| k.public_key() == anchor.public_key())
                && verifies(anchor, &self.zone, &sigs, &records)
        });
        if !anchored {
            return Err(not_anchored("no RRSIG over it by an anchor key verifies".into()).into());
        }
        let keys: Vec<DNSKEY> = keys
            .into_iter()
            .filter(|k| k.zone_key() && !k.revoke())
            .collect();
        *cache = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// The TXT RRset at `owner` if the zone signed it; empty if there is none.
    pub(crate) fn txt(
        &self,
        owner: &Name,
        query: &dyn Fn(&Name, RecordType) -> Result<Message, super::dns::DnsError>,
    ) -> Result<Vec<Record>, super::dns::DnsError> {
        let answer = query(owner, RecordType::TXT)?;
        let (records, sigs) = rrset(&answer, owner, RecordType::TXT);
        if records.is_empty() {
            return Ok(records);
        }
        let keys = self.keys(query)?;
        if keys.iter().any(|k| verifies(k, owner, &sigs, &records)) {
            return Ok(records);
        }
        let reason = if sigs.is_empty() {
            "it carries no RRSIG".to_owned()
        } else {
            "no RRSIG over it by a key of the zone verifies, or its signatures expired".to_owned()
        };
        Err(DnssecError::Bogus {
            name: owner.to_string(),
            reason,
        }
        .into())
    }
}

/// The RRs of type `rtype` at `owner` in the answer section, and the RRSIGs covering them.
fn rrset(answer: &Message, owner: &Name, rtype: RecordType) -> (Vec<Record>, Vec<RRSIG>) {
    let at_owner = |r: &&Record| r.name().to_lowercase() == owner.to_lowercase();
    let records = answer
        .answers()
        .iter()
        .filter(at_owner)
        .filter(|r| r.record_type() == rtype)
        .cloned()
        .collect();
    let sigs = answer
        .answers()
        .iter()
        .filter(at_owner)
        .filter_map(|r| match r.data() {
            Some(RData::DNSSEC(DNSSECRData::RRSIG(sig))) if sig.type_covered() == rtype => {
                Some(sig.clone())
            }
            _ => None,
        })
        .collect();
    (records, sigs)
}

/// Does one of `sigs`, made by `key` (tag and algorithm) and valid now, verify over `records`?
fn verifies(key: &DNSKEY, owner: &Name, sigs: &[RRSIG], records: &[Record]) -> bool {
    let Ok(tag) = key.calculate_key_tag() else {
        return false;
    };
    let now = u32::try_from(crate::record::unix_now()).unwrap_or(u32::MAX);
    sigs.iter().any(|sig| {
        sig.key_tag() == tag
            && sig.algorithm() == key.algorithm()
            && sig.sig_inception() <= now
            && now <= sig.sig_expiration()
            && key.verify_rrsig(owner, DNSClass::IN, sig, records).is_ok()
    })
}

/// A query for `name`/`rtype` with the DO bit (RRSIGs wanted) and CD (we validate ourselves).
pub(crate) fn query_message(name: &Name, rtype: RecordType) -> Message {
    let mut query = Query::new();
    query
        .set_name(name.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(rtype);
    let mut msg = Message::new();
    msg.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .set_checking_disabled(true);
    msg.add_query(query);
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true).set_max_payload(4096);
    msg.set_edns(edns);
    msg
}

/// Is this answer one a validated lookup can use (data, or no data), rather than a failure?
pub(crate) fn usable(code: ResponseCode) -> bool {
    matches!(code, ResponseCode::NoError | ResponseCode::NXDomain)
}
