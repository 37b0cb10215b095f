//! Encoding and strict decoding of frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use namesock_identity::{Guid, PublicKey, Signature};

use crate::copy;

use super::{
    DecodeError, Frame, FrameRef, HEADER_LEN, Hello, HelloAck, MAGIC, MAX_DATA, MAX_FRAME,
    MAX_LOCATORS, Open, OpenAck, Payload, Record, Refuse, ResetReason, Resume, ResumeAck,
    SealedRef, TAG_LEN, VERSION,
};

const HELLO: u8 = 1;
const HELLO_ACK: u8 = 2;
const RESUME: u8 = 3;
const RESUME_ACK: u8 = 4;
const DATA: u8 = 5;
const ACK: u8 = 6;
const PING: u8 = 7;
const PONG: u8 = 8;
const FIN: u8 = 9;
const RESET: u8 = 10;
const MOVED: u8 = 11;
const REFUSE: u8 = 12;
pub(super) const SEALED: u8 = 13;
const OPEN: u8 = 14;
const OPEN_ACK: u8 = 15;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

impl<P: Payload> Frame<P> {
    /// Appends the frame's wire form to `out`: in clear, as the frames that open a path
    /// travel. Every other frame goes out through [`Frame::encode_sealed`]; encoding one in
    /// clear is for tests that play an attacker.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[self.type_code(), 0, 0, 0, 0]);
        self.encode_body(out);
        let len = out.len() - start - HEADER_LEN;
        debug_assert!(len <= MAX_FRAME - HEADER_LEN, "encoded an oversized frame");
        out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    }

    pub(super) fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Hello(h) => {
                h.encode_signed_part(out);
                out.extend_from_slice(&h.signature.0);
            }
            Frame::HelloAck(a) => {
                a.encode_signed_part(out);
                out.extend_from_slice(&a.signature.0);
            }
            Frame::Resume(r) => {
                r.encode_clear_part(out);
                out.extend_from_slice(&r.sealed);
            }
            Frame::ResumeAck(a) => {
                out.extend_from_slice(&a.path_id.to_be_bytes());
                out.extend_from_slice(&a.received.to_be_bytes());
            }
            Frame::Refuse(r) => {
                r.encode_signed_part(out);
                out.extend_from_slice(&r.signature.0);
            }
            Frame::Open(o) => {
                o.encode_clear_part(out);
                out.extend_from_slice(&o.tag);
            }
            Frame::OpenAck(a) => {
                out.extend_from_slice(&a.window.to_be_bytes());
                out.extend_from_slice(&a.linger_ms.to_be_bytes());
            }
            Frame::Data {
                offset,
                ack,
                payload,
            } => {
                debug_assert!(payload.len() <= MAX_DATA);
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&ack.to_be_bytes());
                for part in payload.parts() {
                    copy::extend_vec(out, part);
                }
            }
            Frame::Ack { ack: v }
            | Frame::Ping { token: v }
            | Frame::Pong { token: v }
            | Frame::Fin { offset: v } => out.extend_from_slice(&v.to_be_bytes()),
            Frame::Reset { reason } => out.extend_from_slice(&(*reason as u16).to_be_bytes()),
            Frame::Moved { seq, locators } => {
                debug_assert!(locators.len() <= MAX_LOCATORS);
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(locators.len() as u8);
                for addr in locators {
                    match addr.ip() {
                        IpAddr::V4(ip) => {
                            out.push(FAMILY_V4);
                            out.extend_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            out.push(FAMILY_V6);
                            out.extend_from_slice(&ip.octets());
                        }
                    }
                    out.extend_from_slice(&addr.port().to_be_bytes());
                }
            }
        }
    }
}

/// The body length a frame's header (its first [`HEADER_LEN`] bytes) declares, unchecked.
pub(super) fn body_len(header: &[u8]) -> usize {
    u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize
}

impl<'a> Record<'a> {
    /// `Ok(None)`: `buf` does not hold a whole record yet. `Ok(Some((record, consumed)))`: the
    /// first record in `buf` (a frame in clear decoded, or a SEALED record still encrypted,
    /// both borrowing `buf`) and its length. `Err`: malformed; the path must be closed.
    pub fn decode_ref(buf: &'a mut [u8]) -> Result<Option<(Record<'a>, usize)>, DecodeError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            // Reject an unknown or unsealed type as early as possible, even on a partial header.
            if let Some(&t) = buf.first() {
                outer_name(t)?;
            }
            return Ok(None);
        };
        let mut header_bytes = [0; HEADER_LEN];
        header_bytes.copy_from_slice(header);
        let kind = header[0];
        let name = outer_name(kind)?;
        let len = body_len(header);
        if len > MAX_FRAME - HEADER_LEN {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_FRAME - HEADER_LEN,
            });
        }
        if kind == SEALED && len < 1 + TAG_LEN {
            return Err(DecodeError::SealedTooShort(len));
        }
        let Some(body) = buf.get_mut(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        if kind == SEALED {
            let sealed = SealedRef::new(header_bytes, body);
            return Ok(Some((Record::Sealed(sealed), HEADER_LEN + len)));
        }
        let body: &'a [u8] = body;
        Ok(Some((
            Record::Clear(decode_whole(kind, name, body)?),
            HEADER_LEN + len,
        )))
    }
}

impl<'a> FrameRef<'a> {
    /// A frame in clear, decoded in place (tests and fuzz targets; a path's bytes go through
    /// [`Record::decode_ref`]). Sealed-only frames in clear decode too, so that tests can
    /// play an attacker who sends them; a path refuses them.
    pub fn decode_ref(buf: &'a [u8]) -> Result<Option<(FrameRef<'a>, usize)>, DecodeError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            if let Some(&t) = buf.first() {
                name_of(t).ok_or(DecodeError::UnknownType(t))?;
            }
            return Ok(None);
        };
        let kind = header[0];
        let name = name_of(kind).ok_or(DecodeError::UnknownType(kind))?;
        let len = body_len(header);
        if len > MAX_FRAME - HEADER_LEN {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_FRAME - HEADER_LEN,
            });
        }
        let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        Ok(Some((decode_whole(kind, name, body)?, HEADER_LEN + len)))
    }

    /// The same frame with its payload copied out of the decoder's input.
    pub fn into_owned(self) -> Frame {
        self.map_payload(|payload| {
            let mut owned = Vec::new();
            copy::extend_vec(&mut owned, payload);
            owned
        })
    }
}

/// A body whose length was checked, decoded whole (no trailing bytes).
fn decode_whole<'a>(
    kind: u8,
    name: &'static str,
    body: &'a [u8],
) -> Result<FrameRef<'a>, DecodeError> {
    let mut r = Reader { buf: body, name };
    let frame = decode_body(kind, &mut r)?;
    if !r.buf.is_empty() {
        return Err(DecodeError::TrailingBytes(name));
    }
    Ok(frame)
}

/// The plaintext of a SEALED record: `inner type | inner body`, a frame that travels sealed.
pub(super) fn decode_sealed_inner(plain: &[u8]) -> Result<FrameRef<'_>, DecodeError> {
    let (&kind, body) = plain
        .split_first()
        .ok_or(DecodeError::SealedTooShort(TAG_LEN))?;
    let name = name_of(kind).ok_or(DecodeError::UnknownType(kind))?;
    if is_clear(kind) {
        return Err(DecodeError::ClearInSealed(name));
    }
    decode_whole(kind, name, body)
}

/// A type code a path accepts at the top level: a frame that travels in clear, or SEALED.
fn outer_name(kind: u8) -> Result<&'static str, DecodeError> {
    if kind == SEALED {
        return Ok("SEALED");
    }
    let name = name_of(kind).ok_or(DecodeError::UnknownType(kind))?;
    if !is_clear(kind) {
        return Err(DecodeError::Unsealed(name));
    }
    Ok(name)
}

/// The frames that open a path, sent before there are keys.
fn is_clear(kind: u8) -> bool {
    matches!(kind, HELLO | HELLO_ACK | RESUME | REFUSE | OPEN)
}

impl<P> Frame<P> {
    /// The frame's name in `docs/protocol.md`, for logs and errors.
    pub fn name(&self) -> &'static str {
        name_of(self.type_code()).unwrap_or("?")
    }

    /// HELLO, HELLO_ACK, RESUME, REFUSE and OPEN travel in clear; every other frame sealed.
    pub fn travels_in_clear(&self) -> bool {
        is_clear(self.type_code())
    }

    pub(super) fn type_code(&self) -> u8 {
        match self {
            Frame::Hello(_) => HELLO,
            Frame::HelloAck(_) => HELLO_ACK,
            Frame::Resume(_) => RESUME,
            Frame::ResumeAck(_) => RESUME_ACK,
            Frame::Data { .. } => DATA,
            Frame::Ack { .. } => ACK,
            Frame::Ping { .. } => PING,
            Frame::Pong { .. } => PONG,
            Frame::Fin { .. } => FIN,
            Frame::Reset { .. } => RESET,
            Frame::Moved { .. } => MOVED,
            Frame::Refuse(_) => REFUSE,
            Frame::Open(_) => OPEN,
            Frame::OpenAck(_) => OPEN_ACK,
        }
    }

    /// The same frame with its DATA payload (if it is DATA) turned into another form.
    pub fn map_payload<Q>(self, f: impl FnOnce(P) -> Q) -> Frame<Q> {
        match self {
            Frame::Hello(h) => Frame::Hello(h),
            Frame::HelloAck(a) => Frame::HelloAck(a),
            Frame::Resume(r) => Frame::Resume(r),
            Frame::ResumeAck(a) => Frame::ResumeAck(a),
            Frame::Data {
                offset,
                ack,
                payload,
            } => Frame::Data {
                offset,
                ack,
                payload: f(payload),
            },
            Frame::Ack { ack } => Frame::Ack { ack },
            Frame::Ping { token } => Frame::Ping { token },
            Frame::Pong { token } => Frame::Pong { token },
            Frame::Fin { offset } => Frame::Fin { offset },
            Frame::Reset { reason } => Frame::Reset { reason },
            Frame::Moved { seq, locators } => Frame::Moved { seq, locators },
            Frame::Refuse(r) => Frame::Refuse(r),
            Frame::Open(o) => Frame::Open(o),
            Frame::OpenAck(a) => Frame::OpenAck(a),
        }
    }
}

impl Frame {
    /// [`Frame::decode_ref`], with the payload copied out: for tests, benches and fuzz targets
    /// (the engine decodes in place through [`FrameReader`](super::FrameReader)).
    #[doc(hidden)]
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        Ok(FrameRef::decode_ref(buf)?.map(|(frame, used)| (frame.into_owned(), used)))
    }
}

// The signed part of each authenticated frame is its body without the trailing signature;
// `session::auth` builds the transcripts from these.

impl Hello {
    pub(crate) fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.conn_id);
        out.extend_from_slice(self.client_key.as_bytes());
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.ephemeral);
        out.extend_from_slice(&self.window.to_be_bytes());
    }
}

impl HelloAck {
    pub(crate) fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.conn_id);
        out.extend_from_slice(self.server_key.as_bytes());
        out.extend_from_slice(&self.ephemeral);
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&self.linger_ms.to_be_bytes());
    }
}

impl Resume {
    /// The fields in clear: the associated data of the sealed part.
    pub(crate) fn encode_clear_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.conn_id);
        out.extend_from_slice(&self.freshness.to_be_bytes());
    }
}

impl Open {
    /// The fields before the tag: the tag's associated data.
    pub(crate) fn encode_clear_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.conn_id);
        out.extend_from_slice(&self.parent);
        out.extend_from_slice(&self.child.to_be_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.window.to_be_bytes());
    }

    /// The frame's body as on the wire (the child keys' salt hashes it).
    pub(crate) fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(super::OPEN_BODY_LEN);
        self.encode_clear_part(&mut out);
        out.extend_from_slice(&self.tag);
        out
    }
}

impl Refuse {
    pub(crate) fn encode_signed_part(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.conn_id);
        out.extend_from_slice(&(self.reason as u16).to_be_bytes());
        out.extend_from_slice(&self.echo);
        out.extend_from_slice(self.server_key.as_bytes());
    }
}

fn name_of(kind: u8) -> Option<&'static str> {
    Some(match kind {
        HELLO => "HELLO",
        HELLO_ACK => "HELLO_ACK",
        RESUME => "RESUME",
        RESUME_ACK => "RESUME_ACK",
        DATA => "DATA",
        ACK => "ACK",
        PING => "PING",
        PONG => "PONG",
        FIN => "FIN",
        RESET => "RESET",
        MOVED => "MOVED",
        REFUSE => "REFUSE",
        OPEN => "OPEN",
        OPEN_ACK => "OPEN_ACK",
        _ => return None,
    })
}

fn decode_body<'a>(kind: u8, r: &mut Reader<'a>) -> Result<FrameRef<'a>, DecodeError> {
    Ok(match kind {
        HELLO => {
            r.magic_and_version()?;
            Frame::Hello(Hello {
                conn_id: r.array()?,
                client_key: r.key()?,
                target: Guid::from_bytes(r.array()?),
                port: r.u16()?,
                ephemeral: r.array()?,
                window: r.u32()?,
                signature: Signature(r.array()?),
            })
        }
        HELLO_ACK => Frame::HelloAck(HelloAck {
            conn_id: r.array()?,
            server_key: r.key()?,
            ephemeral: r.array()?,
            window: r.u32()?,
            linger_ms: r.u32()?,
            signature: Signature(r.array()?),
        }),
        RESUME => {
            r.magic_and_version()?;
            Frame::Resume(Resume {
                conn_id: r.array()?,
                freshness: r.u64()?,
                sealed: r.array()?,
            })
        }
        RESUME_ACK => Frame::ResumeAck(ResumeAck {
            path_id: r.u32()?,
            received: r.u64()?,
        }),
        REFUSE => {
            let conn_id = r.array()?;
            let code = r.u16()?;
            let reason =
                ResetReason::from_code(code).ok_or(DecodeError::UnknownResetReason(code))?;
            Frame::Refuse(Refuse {
                conn_id,
                reason,
                echo: r.array()?,
                server_key: r.key()?,
                signature: Signature(r.array()?),
            })
        }
        OPEN => {
            r.magic_and_version()?;
            Frame::Open(Open {
                conn_id: r.array()?,
                parent: r.array()?,
                child: r.u64()?,
                port: r.u16()?,
                window: r.u32()?,
                tag: r.array()?,
            })
        }
        OPEN_ACK => Frame::OpenAck(OpenAck {
            window: r.u32()?,
            linger_ms: r.u32()?,
        }),
        DATA => {
            let offset = r.u64()?;
            let ack = r.u64()?;
            let payload = r.rest();
            if payload.len() > MAX_DATA {
                return Err(DecodeError::PayloadTooLarge(payload.len()));
            }
            Frame::Data {
                offset,
                ack,
                payload,
            }
        }
        ACK => Frame::Ack { ack: r.u64()? },
        PING => Frame::Ping { token: r.u64()? },
        PONG => Frame::Pong { token: r.u64()? },
        FIN => Frame::Fin { offset: r.u64()? },
        RESET => {
            let code = r.u16()?;
            let reason =
                ResetReason::from_code(code).ok_or(DecodeError::UnknownResetReason(code))?;
            Frame::Reset { reason }
        }
        MOVED => {
            let seq = r.u64()?;
            let count = r.u8()? as usize;
            if count > MAX_LOCATORS {
                return Err(DecodeError::TooManyLocators(count));
            }
            let mut locators = Vec::with_capacity(count);
            for _ in 0..count {
                let ip = match r.u8()? {
                    FAMILY_V4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                    FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                    other => return Err(DecodeError::BadAddressFamily(other)),
                };
                locators.push(SocketAddr::new(ip, r.u16()?));
            }
            Frame::Moved { seq, locators }
        }
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// A cursor over a frame body whose length was already checked.
struct Reader<'a> {
    buf: &'a [u8],
    name: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(self.name));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    fn key(&mut self) -> Result<PublicKey, DecodeError> {
        PublicKey::from_bytes(&self.array()?).map_err(|_| DecodeError::BadKey)
    }

    fn magic_and_version(&mut self) -> Result<(), DecodeError> {
        if self.array::<4>()? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        match self.u8()? {
            VERSION => Ok(()),
            v => Err(DecodeError::UnsupportedVersion(v)),
        }
    }
}
