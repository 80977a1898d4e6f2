//! LAN discovery datagrams (UDP): a client's probe and a daemon's reply.
//!
//! A probe is exactly [`PROBE_LEN`] bytes, mostly zero padding; a reply is
//! never larger than the probe that asked for it, so a forged source
//! address cannot turn a daemon into an amplifier. Layout (big-endian, `str`
//! as in the stream protocol: u16 length, then UTF-8):
//!
//! ```text
//! probe:  magic "MUXDISC" 0x01 | kind u8 = 1 | nonce u32 | zeros to 512 B
//! reply:  magic "MUXDISC" 0x01 | kind u8 = 2 | nonce u32 | port u16
//!         | sessions u32 | connections u32 | name str | version str
//! ```
//!
//! Anything else (another length, magic or kind) is ignored without an
//! answer: a datagram has no connection to report an error on.

/// The first eight bytes of every discovery datagram (the last is the
/// layout's version).
pub const MAGIC: [u8; 8] = *b"MUXDISC\x01";
/// A probe's exact size. Large on purpose: it bounds every reply.
pub const PROBE_LEN: usize = 512;
/// Longest name or version a reply carries (longer ones are cut).
pub const MAX_FIELD: usize = 64;

const PROBE: u8 = 1;
const REPLY: u8 = 2;

/// A daemon's answer to a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The probe's nonce, echoed so the asker can match replies to probes.
    pub nonce: u32,
    /// The daemon's TCP port (its address is the reply's source address).
    pub port: u16,
    /// Registered sessions now.
    pub sessions: u32,
    /// Open connections now, registered or not.
    pub connections: u32,
    /// The daemon's name (its host name unless configured).
    pub name: String,
    /// The daemon's version.
    pub version: String,
}

/// Encodes a probe carrying `nonce`.
pub fn probe(nonce: u32) -> [u8; PROBE_LEN] {
    let mut p = [0u8; PROBE_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8] = PROBE;
    p[9..13].copy_from_slice(&nonce.to_be_bytes());
    p
}

/// The nonce of a well-formed probe; `None` for anything else.
pub fn parse_probe(datagram: &[u8]) -> Option<u32> {
    if datagram.len() != PROBE_LEN || datagram[..8] != MAGIC || datagram[8] != PROBE {
        return None;
    }
    Some(u32::from_be_bytes(datagram[9..13].try_into().ok()?))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

impl Reply {
    /// Encodes the reply; at most 9 + 14 + 2 * (2 + [`MAX_FIELD`]) bytes,
    /// well under [`PROBE_LEN`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.push(REPLY);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.sessions.to_be_bytes());
        out.extend_from_slice(&self.connections.to_be_bytes());
        put_str(&mut out, &self.name);
        put_str(&mut out, &self.version);
        out
    }

    /// Decodes a reply; `None` if the datagram is not exactly one.
    pub fn decode(datagram: &[u8]) -> Option<Reply> {
        let rest = datagram.strip_prefix(&MAGIC)?;
        let (&kind, rest) = rest.split_first()?;
        if kind != REPLY || rest.len() < 14 {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().unwrap());
        let (nonce, port) = (u32_at(0), u16::from_be_bytes([rest[4], rest[5]]));
        let (sessions, connections) = (u32_at(6), u32_at(10));
        let mut rest = &rest[14..];
        let mut take_str = || -> Option<String> {
            let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
            let s = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_string();
            rest = &rest[2 + len..];
            Some(s)
        };
        let name = take_str()?;
        let version = take_str()?;
        if !rest.is_empty() {
            return None;
        }
        Some(Reply {
            nonce,
            port,
            sessions,
            connections,
            name,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips_and_other_datagrams_are_ignored() {
        let p = probe(0xdead_beef);
        assert_eq!(parse_probe(&p), Some(0xdead_beef));
        assert_eq!(parse_probe(&p[..PROBE_LEN - 1]), None);
        let mut long = p.to_vec();
        long.push(0);
        assert_eq!(parse_probe(&long), None);
        let mut wrong = p;
        wrong[8] = REPLY;
        assert_eq!(parse_probe(&wrong), None);
        wrong[8] = PROBE;
        wrong[0] = b'X';
        assert_eq!(parse_probe(&wrong), None);
    }

    #[test]
    fn reply_round_trips_and_is_never_larger_than_a_probe() {
        let r = Reply {
            nonce: 7,
            port: 25000,
            sessions: 3,
            connections: 4,
            name: "é".repeat(100),
            version: "v".repeat(1000),
        };
        let bytes = r.encode();
        assert!(bytes.len() <= PROBE_LEN);
        let back = Reply::decode(&bytes).expect("decodes");
        assert_eq!(back.name, "é".repeat(32), "cut at a char boundary");
        assert_eq!(back.version.len(), MAX_FIELD);
        assert_eq!((back.nonce, back.port, back.sessions), (7, 25000, 3));
        for cut in 0..bytes.len() {
            assert_eq!(Reply::decode(&bytes[..cut]), None);
        }
    }
}
