//! The DNS backend: the GNS as an ordinary DNS zone on any authoritative server.
//!
//! A GUID's records live at `<guid>.<zone>`: one TXT RR holding the signed [`Record`] (base64,
//! in character-strings of at most 255 bytes) and A/AAAA RRs with its addresses, so that `dig`
//! shows them. The resolver trusts only the TXT: A/AAAA that disagree with it are ignored. A
//! name's binding is one TXT RR at the name itself (`web.<zone>`).
//!
//! Updates are RFC 2136 UPDATE messages authenticated with TSIG (HMAC-SHA256), sent over TCP to
//! the configured server; each replaces the RRsets at the owner name in one atomic message.
//! Lookups go through hickory-resolver with the cache disabled, so every resolve asks the
//! server; published TTLs are low (a few seconds) for any other resolver on the way.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::dnssec::tsig::TSigner;
use hickory_proto::rr::rdata::{A, AAAA, NULL, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record as DnsRecord, RecordType};
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::error::ResolveErrorKind;
use namesock_identity::Guid;

use crate::config::DnsConfig;
use crate::dnssec::{self, DnssecError, Validator};

/// How far apart our clock and the server's may be for TSIG (RFC 8945 suggests 300 s).
const TSIG_FUDGE: u16 = 300;

/// Why the DNS backend failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The DNS lookup failed (timeout, server failure): not the same as "not found".
    #[error("DNS lookup of {name} failed: {source}")]
    Lookup {
        name: String,
        #[source]
        source: Box<hickory_resolver::error::ResolveError>,
    },
    /// The DNS server could not be reached for an update.
    #[error("DNS server {server}: {source} (is it running, and is NAMESOCK_GNS right?)")]
    Transport {
        server: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A DNS message could not be built or parsed.
    #[error("DNS: {what}: {source}")]
    Message {
        what: String,
        #[source]
        source: hickory_proto::error::ProtoError,
    },
    /// The server's answer is not what an answer to our update must be.
    #[error("DNS server {server} gave a bad answer: {detail}")]
    BadResponse { server: SocketAddr, detail: String },
    /// Publishing to DNS needs a TSIG key.
    #[error(
        "publishing to DNS needs a TSIG key: add ?tsig-key=/path/to/keyfile (or tsig-name=..&tsig-secret=..) to NAMESOCK_GNS"
    )]
    NoTsigKey,
    /// The server did not accept our TSIG key or signature (RFC 8945 NOTAUTH).
    #[error(
        "DNS server {server} rejected the TSIG key {key}: check its name and secret against the server's `key` statement (and the clocks)"
    )]
    TsigRejected { server: SocketAddr, key: String },
    /// The server refused the update (e.g. REFUSED: the key may not update this zone).
    #[error(
        "DNS server {server} refused the update of zone {zone}: {rcode} (check the zone's allow-update / update-policy)"
    )]
    UpdateRefused {
        server: SocketAddr,
        zone: String,
        rcode: String,
    },
    /// A conditional update lost a race: the name changed meanwhile.
    #[error("{name} changed while it was being registered; try again")]
    UpdateConflict { name: String },
    /// DNSSEC validation (with a trust anchor configured) refused an answer.
    #[error(transparent)]
    Dnssec(#[from] DnssecError),
    /// A validated lookup's query failed at the server.
    #[error("DNS server {server} answered the query for {name} with {rcode}")]
    QueryFailed {
        server: SocketAddr,
        name: String,
        rcode: String,
    },
}

/// What a conditional update expects to find at the owner name (RFC 2136 prerequisites).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Replace whatever is there.
    Anything,
    /// No TXT RRset may exist yet (first-come registration).
    Absent,
    /// The TXT RRset must still be exactly this one encoded blob.
    Current(Vec<u8>),
}

/// A GNS zone on a DNS server.
pub struct DnsStore {
    config: DnsConfig,
    zone: Name,
    /// The lookup client and the process that built it: its runtime (epoll instance, locks)
    /// must not be shared with a forked child, which builds its own.
    resolver: Mutex<(u32, Arc<Resolver>)>,
    signer: Option<TSigner>,
    /// With a trust anchor: lookups validated with DNSSEC.
    validator: Option<Validator>,
}

impl std::fmt::Debug for DnsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn dns_name(text: &str) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{text}.")).map_err(|source| DnsError::Message {
        what: format!("the name {text}"),
        source,
    })
}

impl DnsStore {
    pub fn new(config: &DnsConfig) -> Result<DnsStore, DnsError> {
        let resolver = build_resolver(config)?;
        let signer = config
            .tsig
            .as_ref()
            .map(|key| {
                TSigner::new(
                    key.secret.clone(),
                    TsigAlgorithm::HmacSha256,
                    dns_name(&key.name)?,
                    TSIG_FUDGE,
                )
                .map_err(|source| DnsError::Message {
                    what: "the TSIG signer".to_owned(),
                    source,
                })
            })
            .transpose()?;
        let zone = dns_name(&config.zone)?;
        let validator = config
            .trust_anchor
            .as_ref()
            .map(|path| Validator::from_file(path, &zone))
            .transpose()?;
        Ok(DnsStore {
            zone,
            config: config.clone(),
            resolver: Mutex::new((std::process::id(), Arc::new(resolver))),
            signer,
            validator,
        })
    }

    /// This process's lookup client (rebuilt once after a fork).
    fn resolver(&self) -> Result<Arc<Resolver>, DnsError> {
        let mut guard = self
            .resolver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pid = std::process::id();
        if guard.0 != pid {
            let fresh = Arc::new(build_resolver(&self.config)?);
            // The parent's copy may hold locks taken by threads that do not exist here:
            // never touch it again, not even to drop it.
            std::mem::forget(std::mem::replace(&mut *guard, (pid, fresh)));
        }
        Ok(Arc::clone(&guard.1))
    }

    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// This host's addresses changed: the lookup client's connections (its TCP connection to
    /// the server stays open between lookups) may be bound to an address that is gone, and a
    /// query sent on one waits out the whole timeout. The next lookup starts a fresh client.
    pub fn reconnect(&self) {
        if let Ok(fresh) = build_resolver(&self.config) {
            let mut guard = self
                .resolver
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *guard = (std::process::id(), Arc::new(fresh));
        }
    }

    fn guid_name(&self, guid: &Guid) -> String {
        format!("{guid}.{}", self.config.zone)
    }

    /// Every TXT blob at `<guid>.<zone>` (the caller verifies and picks).
    pub fn get_record(&self, guid: &Guid) -> Result<Vec<Vec<u8>>, DnsError> {
        self.get_txt(&self.guid_name(guid))
    }

    /// Every TXT blob at `name` (a full name in the zone).
    pub fn get_name(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        self.get_txt(name)
    }

    fn get_txt(&self, owner: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        let name = dns_name(owner)?;
        if let Some(validator) = &self.validator {
            let records = validator.txt(&name, &|name, rtype| self.query_tcp(name, rtype))?;
            return Ok(records
                .iter()
                .filter_map(|r| match r.data() {
                    Some(RData::TXT(txt)) => Some(txt_blob(txt)),
                    _ => None,
                })
                .collect());
        }
        let lookup = match self.resolver()?.txt_lookup(name) {
            Ok(lookup) => lookup,
            Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => {
                return Ok(Vec::new());
            }
            Err(source) => {
                return Err(DnsError::Lookup {
                    name: owner.to_owned(),
                    source: Box::new(source),
                });
            }
        };
        Ok(lookup.iter().map(txt_blob).collect())
    }

    /// One query over TCP to the server, with the DO bit (for DNSSEC validation).
    fn query_tcp(&self, name: &Name, rtype: RecordType) -> Result<Message, DnsError> {
        let server = self.config.server;
        let msg = dnssec::query_message(name, rtype);
        let request = msg.to_vec().map_err(|source| DnsError::Message {
            what: format!("the query for {name}"),
            source,
        })?;
        let bytes = self
            .exchange_tcp(&request)
            .map_err(|source| DnsError::Transport { server, source })?;
        let answer = Message::from_vec(&bytes).map_err(|source| DnsError::Message {
            what: format!("the answer for {name}"),
            source,
        })?;
        if answer.id() != msg.id() {
            return Err(DnsError::BadResponse {
                server,
                detail: "answer id does not match the query".to_owned(),
            });
        }
        if !dnssec::usable(answer.response_code()) {
            return Err(DnsError::QueryFailed {
                server,
                name: name.to_string(),
                rcode: answer.response_code().to_string(),
            });
        }
        Ok(answer)
    }

    /// Replaces the TXT, A and AAAA RRsets at `<guid>.<zone>`.
    pub fn put_record(&self, guid: &Guid, encoded: &[u8], ips: &[IpAddr]) -> Result<(), DnsError> {
        let owner = dns_name(&self.guid_name(guid))?;
        let mut msg = self.update_message();
        for rtype in [RecordType::TXT, RecordType::A, RecordType::AAAA] {
            msg.add_update(delete_rrset(&owner, rtype));
        }
        msg.add_update(txt_record(&owner, self.config.ttl, encoded));
        let mut seen = Vec::with_capacity(ips.len());
        for ip in ips {
            if seen.contains(ip) {
                continue;
            }
            seen.push(*ip);
            let rdata = match ip {
                IpAddr::V4(v4) => RData::A(A::from(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA::from(*v6)),
            };
            msg.add_update(DnsRecord::from_rdata(owner.clone(), self.config.ttl, rdata));
        }
        self.send_update(msg, &owner.to_string())
    }

    /// Replaces the TXT RRset at `name` with `encoded`, if what is there matches `expect`.
    pub fn put_name(&self, name: &str, encoded: &[u8], expect: &Expect) -> Result<(), DnsError> {
        let owner = dns_name(name)?;
        let mut msg = self.update_message();
        match expect {
            Expect::Anything => {}
            Expect::Absent => {
                // RFC 2136 2.4.3: RRset does not exist (class NONE, empty rdata).
                let mut pre = delete_rrset(&owner, RecordType::TXT);
                pre.set_dns_class(DNSClass::NONE);
                msg.add_pre_requisite(pre);
            }
            Expect::Current(current) => {
                // RFC 2136 2.4.2: RRset exists, value dependent (class IN, TTL 0).
                msg.add_pre_requisite(txt_record(&owner, 0, current));
            }
        }
        msg.add_update(delete_rrset(&owner, RecordType::TXT));
        msg.add_update(txt_record(&owner, self.config.ttl, encoded));
        self.send_update(msg, name)
    }

    fn update_message(&self) -> Message {
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        let mut msg = Message::new();
        msg.set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        msg.add_zone(zone);
        msg
    }

    /// Signs `msg` with TSIG, sends it over TCP and checks the answer. A SERVFAIL (the server
    /// could not process it, e.g. right after it started) is retried with backoff within the
    /// timeout; other refusals are final.
    fn send_update(&self, msg: Message, owner: &str) -> Result<(), DnsError> {
        let server = self.config.server;
        let signer = self.signer.as_ref().ok_or(DnsError::NoTsigKey)?;
        let start = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let mut attempt = msg.clone();
            attempt.set_id(rand::random());
            let code = self.exchange_update(attempt, signer, owner)?;
            match code {
                ResponseCode::NoError => {
                    tracing::debug!(owner, %server, "DNS update accepted");
                    return Ok(());
                }
                ResponseCode::ServFail if start.elapsed() + backoff < self.config.timeout => {
                    tracing::debug!(owner, %server, "SERVFAIL on update; retrying");
                    std::thread::sleep(backoff);
                    backoff *= 2;
                }
                // RFC 8945 5.2: a bad key, signature or time is answered NOTAUTH (unsigned).
                ResponseCode::NotAuth => {
                    return Err(DnsError::TsigRejected {
                        server,
                        key: signer.signer_name().to_string(),
                    });
                }
                ResponseCode::YXRRSet | ResponseCode::NXRRSet => {
                    return Err(DnsError::UpdateConflict {
                        name: owner.to_owned(),
                    });
                }
                code => {
                    return Err(DnsError::UpdateRefused {
                        server,
                        zone: self.config.zone.clone(),
                        rcode: code.to_string(),
                    });
                }
            }
        }
    }

    /// One signed exchange; the answer's code, with a success's TSIG verified.
    fn exchange_update(
        &self,
        mut msg: Message,
        signer: &TSigner,
        owner: &str,
    ) -> Result<ResponseCode, DnsError> {
        let server = self.config.server;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let message_err = |source| DnsError::Message {
            what: format!("the update of {owner}"),
            source,
        };
        let mut verifier = msg.finalize(signer, now).map_err(message_err)?;
        let request = msg.to_vec().map_err(message_err)?;
        let response_bytes = self
            .exchange_tcp(&request)
            .map_err(|source| DnsError::Transport { server, source })?;
        let response = Message::from_vec(&response_bytes).map_err(|source| DnsError::Message {
            what: format!("the answer to the update of {owner}"),
            source,
        })?;
        if response.id() != msg.id() {
            return Err(DnsError::BadResponse {
                server,
                detail: "answer id does not match the update".to_owned(),
            });
        }
        let code = response.response_code();
        // A success must come from the key holder too, or it proves nothing.
        if code == ResponseCode::NoError
            && let Some(verify) = verifier.as_mut()
        {
            verify(&response_bytes).map_err(|e| DnsError::BadResponse {
                server,
                detail: format!("TSIG on the answer does not verify: {e}"),
            })?;
        }
        Ok(code)
    }

    fn exchange_tcp(&self, request: &[u8]) -> io::Result<Vec<u8>> {
        let len = u16::try_from(request.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "update too large"))?;
        let mut stream = TcpStream::connect_timeout(&self.config.server, self.config.timeout)?;
        stream.set_read_timeout(Some(self.config.timeout))?;
        stream.set_write_timeout(Some(self.config.timeout))?;
        stream.set_nodelay(true)?;
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(request);
        stream.write_all(&framed)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let len = usize::from(u16::from_be_bytes(len));
        let mut response = vec![0u8; len];
        stream.read_exact(&mut response)?;
        Ok(response)
    }
}

/// A hickory resolver that asks only `config.server`, caches nothing and gives up in time.
fn build_resolver(config: &DnsConfig) -> Result<Resolver, DnsError> {
    let servers =
        NameServerConfigGroup::from_ips_clear(&[config.server.ip()], config.server.port(), true);
    let mut opts = ResolverOpts::default();
    // Every resolve asks the server: addresses change, and a stale cache defeats mobility.
    opts.cache_size = 0;
    opts.use_hosts_file = false;
    opts.recursion_desired = false;
    opts.edns0 = true;
    opts.attempts = 2;
    opts.timeout = config.timeout / 2;
    opts.try_tcp_on_error = true;
    Resolver::new(ResolverConfig::from_parts(None, vec![], servers), opts).map_err(|source| {
        DnsError::Transport {
            server: config.server,
            source,
        }
    })
}

/// The blob in a TXT RR (base64 across its character-strings). Text that is not base64 is
/// passed on as it is, to be rejected as malformed.
fn txt_blob(txt: &TXT) -> Vec<u8> {
    let text: Vec<u8> = txt
        .txt_data()
        .iter()
        .flat_map(|s| s.iter())
        .copied()
        .collect();
    data_encoding::BASE64.decode(&text).unwrap_or(text)
}

/// RFC 2136 2.5.2: delete an RRset (class ANY, TTL 0, empty rdata).
fn delete_rrset(owner: &Name, rtype: RecordType) -> DnsRecord {
    let mut rec = DnsRecord::with(owner.clone(), rtype, 0);
    rec.set_dns_class(DNSClass::ANY);
    rec.set_data(Some(RData::NULL(NULL::new())));
    rec
}

/// One TXT RR holding `blob` as base64 in character-strings of at most 255 bytes.
fn txt_record(owner: &Name, ttl: u32, blob: &[u8]) -> DnsRecord {
    let text = data_encoding::BASE64.encode(blob);
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(255).collect();
    DnsRecord::from_rdata(owner.clone(), ttl, RData::TXT(TXT::from_bytes(chunks)))
}
