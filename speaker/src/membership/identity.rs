//! Who a speaker is on the membership wire, and the binary codec foca uses for it.
//!
//! A member is its Kubernetes node name (unique in a cluster, and what the planner ranks), the
//! socket address it listens on, and a `generation`: the start time of this speaker process
//! in milliseconds since the epoch, bumped by one whenever it renews the identity after being
//! declared down while alive. Foca keys members by name (`Identity::Addr`), so a restarted
//! speaker (larger generation) replaces its previous life at once instead of waiting for the
//! cluster to forget it. A renewal after the speaker was cut off also records the return in
//! `flaps` (see [`crate::rejoin`]): every speaker reads the same record, so all of them agree
//! on who is damped.
//!
//! Wire format (all integers big-endian, every length checked before it is read):
//!
//! ```text
//! NodeId  = name_len:u8 name:[u8; name_len] (UTF-8, 1..=253)
//!           family:u8 (4 | 6) ip:[u8; 4 | 16] port:u16 generation:u64
//!           last_return_ms:u64 penalty:u32
//! Member  = NodeId incarnation:u16 state:u8 (0 alive, 1 suspect, 2 down)
//! Header  = src:NodeId src_incarnation:u16 dst:NodeId kind:u8 [fields of kind]
//!   kind  0 Ping(probe:u8)            1 Ack(probe:u8)
//!         2 PingReq(target, probe)    3 IndirectPing(origin, probe)
//!         4 IndirectAck(target, probe) 5 ForwardedAck(origin, probe)
//!         6 Announce 7 Feed 8 Gossip 9 Broadcast 10 TurnUndead
//! ```

use crate::rejoin::Flaps;
use bytes::{Buf, BufMut};
use foca::{Header, Identity, Member, Message, State};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A speaker's identity in the membership protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    /// The Kubernetes node name.
    pub name: String,
    /// Where its membership socket listens.
    pub addr: SocketAddr,
    /// Start time in ms since the epoch (+1 per renewal); the larger wins a name conflict.
    pub generation: u64,
    /// Its returns from isolation.
    pub flaps: Flaps,
}

impl NodeId {
    /// The identity to come back with after being declared down while alive: the next
    /// generation, with one more return on record if this speaker had been cut off.
    pub fn renewed(&self, was_cut_off: bool, now_ms: u64) -> NodeId {
        NodeId {
            generation: self.generation.wrapping_add(1),
            flaps: if was_cut_off {
                self.flaps.returned(now_ms)
            } else {
                self.flaps
            },
            ..self.clone()
        }
    }
}

impl Identity for NodeId {
    type Addr = String;

    /// No automatic renewal: foca reports `Defunct` instead and the driver comes back with
    /// [`NodeId::renewed`], which needs to know whether this speaker had been cut off.
    fn renew(&self) -> Option<Self> {
        None
    }

    fn addr(&self) -> String {
        self.name.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Why a datagram (already authenticated) could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("truncated message")]
    Truncated,
    #[error("bad node name")]
    BadName,
    #[error("unknown address family {0}")]
    BadFamily(u8),
    #[error("unknown member state {0}")]
    BadState(u8),
    #[error("unknown message kind {0}")]
    BadKind(u8),
    #[error("buffer too small to encode")]
    NoSpace,
}

/// The foca codec for [`NodeId`]; stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct WireCodec;

fn need(buf: &impl Buf, n: usize) -> Result<(), CodecError> {
    if buf.remaining() < n {
        Err(CodecError::Truncated)
    } else {
        Ok(())
    }
}

fn get_u8(buf: &mut impl Buf) -> Result<u8, CodecError> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut impl Buf) -> Result<u16, CodecError> {
    need(buf, 2)?;
    Ok(buf.get_u16())
}

fn get_u64(buf: &mut impl Buf) -> Result<u64, CodecError> {
    need(buf, 8)?;
    Ok(buf.get_u64())
}

fn id_len(id: &NodeId) -> usize {
    1 + id.name.len() + 1 + if id.addr.is_ipv4() { 4 } else { 16 } + 2 + 8 + 8 + 4
}

fn put_id(id: &NodeId, buf: &mut impl BufMut) -> Result<(), CodecError> {
    let name = id.name.as_bytes();
    if name.is_empty() || name.len() > 253 {
        return Err(CodecError::BadName);
    }
    if buf.remaining_mut() < id_len(id) {
        return Err(CodecError::NoSpace);
    }
    buf.put_u8(name.len() as u8);
    buf.put_slice(name);
    match id.addr.ip() {
        IpAddr::V4(ip) => {
            buf.put_u8(4);
            buf.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            buf.put_u8(6);
            buf.put_slice(&ip.octets());
        }
    }
    buf.put_u16(id.addr.port());
    buf.put_u64(id.generation);
    buf.put_u64(id.flaps.last_ms);
    buf.put_u32(id.flaps.penalty);
    Ok(())
}

fn get_id(buf: &mut impl Buf) -> Result<NodeId, CodecError> {
    let len = usize::from(get_u8(buf)?);
    if len == 0 {
        return Err(CodecError::BadName);
    }
    need(buf, len)?;
    let mut name = vec![0; len];
    buf.copy_to_slice(&mut name);
    let name = String::from_utf8(name).map_err(|_| CodecError::BadName)?;
    let ip = match get_u8(buf)? {
        4 => {
            need(buf, 4)?;
            let mut o = [0; 4];
            buf.copy_to_slice(&mut o);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        6 => {
            need(buf, 16)?;
            let mut o = [0; 16];
            buf.copy_to_slice(&mut o);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        f => return Err(CodecError::BadFamily(f)),
    };
    let port = get_u16(buf)?;
    let generation = get_u64(buf)?;
    let last_ms = get_u64(buf)?;
    need(buf, 4)?;
    let penalty = buf.get_u32();
    Ok(NodeId {
        name,
        addr: SocketAddr::new(ip, port),
        generation,
        flaps: Flaps { last_ms, penalty },
    })
}

impl foca::Codec<NodeId> for WireCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeId>,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        // Encode into a scratch vector first so a failure never leaves `buf` half written.
        let mut out = Vec::with_capacity(128);
        put_id(&header.src, &mut out)?;
        out.put_u16(header.src_incarnation);
        put_id(&header.dst, &mut out)?;
        match &header.message {
            Message::Ping(p) => out.put_slice(&[0, *p]),
            Message::Ack(p) => out.put_slice(&[1, *p]),
            Message::PingReq {
                target,
                probe_number,
            } => {
                out.put_u8(2);
                put_id(target, &mut out)?;
                out.put_u8(*probe_number);
            }
            Message::IndirectPing {
                origin,
                probe_number,
            } => {
                out.put_u8(3);
                put_id(origin, &mut out)?;
                out.put_u8(*probe_number);
            }
            Message::IndirectAck {
                target,
                probe_number,
            } => {
                out.put_u8(4);
                put_id(target, &mut out)?;
                out.put_u8(*probe_number);
            }
            Message::ForwardedAck {
                origin,
                probe_number,
            } => {
                out.put_u8(5);
                put_id(origin, &mut out)?;
                out.put_u8(*probe_number);
            }
            Message::Announce => out.put_u8(6),
            Message::Feed => out.put_u8(7),
            Message::Gossip => out.put_u8(8),
            Message::Broadcast => out.put_u8(9),
            Message::TurnUndead => out.put_u8(10),
        }
        if buf.remaining_mut() < out.len() {
            return Err(CodecError::NoSpace);
        }
        buf.put_slice(&out);
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<NodeId>, CodecError> {
        let src = get_id(&mut buf)?;
        let src_incarnation = get_u16(&mut buf)?;
        let dst = get_id(&mut buf)?;
        let message = match get_u8(&mut buf)? {
            0 => Message::Ping(get_u8(&mut buf)?),
            1 => Message::Ack(get_u8(&mut buf)?),
            2 => Message::PingReq {
                target: get_id(&mut buf)?,
                probe_number: get_u8(&mut buf)?,
            },
            3 => Message::IndirectPing {
                origin: get_id(&mut buf)?,
                probe_number: get_u8(&mut buf)?,
            },
            4 => Message::IndirectAck {
                target: get_id(&mut buf)?,
                probe_number: get_u8(&mut buf)?,
            },
            5 => Message::ForwardedAck {
                origin: get_id(&mut buf)?,
                probe_number: get_u8(&mut buf)?,
            },
            6 => Message::Announce,
            7 => Message::Feed,
            8 => Message::Gossip,
            9 => Message::Broadcast,
            10 => Message::TurnUndead,
            k => return Err(CodecError::BadKind(k)),
        };
        Ok(Header {
            src,
            src_incarnation,
            dst,
            message,
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeId>,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        if buf.remaining_mut() < id_len(member.id()) + 3 {
            return Err(CodecError::NoSpace);
        }
        put_id(member.id(), &mut buf)?;
        buf.put_u16(member.incarnation());
        buf.put_u8(match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<NodeId>, CodecError> {
        let id = get_id(&mut buf)?;
        let incarnation = get_u16(&mut buf)?;
        let state = match get_u8(&mut buf)? {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            s => return Err(CodecError::BadState(s)),
        };
        Ok(Member::new(id, incarnation, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Codec;

    fn id(name: &str, addr: &str, generation: u64) -> NodeId {
        NodeId {
            name: name.into(),
            addr: addr.parse().unwrap(),
            generation,
            flaps: Flaps {
                last_ms: generation * 7,
                penalty: 1234,
            },
        }
    }

    #[test]
    fn header_round_trips_every_kind() {
        let a = id("node-a", "192.0.2.1:7946", 1);
        let b = id("node-b", "[2001:db8::2]:7946", 2);
        let kinds = vec![
            Message::Ping(7),
            Message::Ack(8),
            Message::PingReq {
                target: b.clone(),
                probe_number: 9,
            },
            Message::IndirectPing {
                origin: a.clone(),
                probe_number: 10,
            },
            Message::IndirectAck {
                target: b.clone(),
                probe_number: 11,
            },
            Message::ForwardedAck {
                origin: a.clone(),
                probe_number: 12,
            },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ];
        for message in kinds {
            let h = Header {
                src: a.clone(),
                src_incarnation: 3,
                dst: b.clone(),
                message,
            };
            let mut buf = Vec::new();
            WireCodec.encode_header(&h, &mut buf).unwrap();
            let mut rd = &buf[..];
            assert_eq!(WireCodec.decode_header(&mut rd).unwrap(), h);
            assert!(rd.is_empty());
            // Every strict prefix is truncated, never a panic.
            for cut in 0..buf.len() {
                assert!(WireCodec.decode_header(&buf[..cut]).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn member_round_trips_and_rejects_bad_state() {
        let m = Member::new(id("n", "192.0.2.3:1", 5), 4, State::Suspect);
        let mut buf = Vec::new();
        WireCodec.encode_member(&m, &mut buf).unwrap();
        assert_eq!(WireCodec.decode_member(&buf[..]).unwrap(), m);
        let last = buf.len() - 1;
        buf[last] = 9;
        assert_eq!(
            WireCodec.decode_member(&buf[..]),
            Err(CodecError::BadState(9))
        );
    }

    #[test]
    fn encoding_into_a_full_buffer_leaves_it_clean() {
        let m = Member::alive(id("node-a", "192.0.2.1:7946", 1));
        let mut small = [0u8; 10];
        let mut slice = &mut small[..];
        assert_eq!(
            WireCodec.encode_member(&m, &mut slice),
            Err(CodecError::NoSpace)
        );
        assert_eq!(small, [0u8; 10]);
    }

    #[test]
    fn newer_generation_wins_and_renewal_bumps_it() {
        let old = id("n", "192.0.2.1:7946", 10);
        assert_eq!(old.renew(), None, "renewal is the driver's, not foca's");
        let new = old.renewed(false, 5_000);
        assert_eq!(new.generation, 11);
        assert_eq!(new.flaps, old.flaps, "not cut off: no return on record");
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        let back = old.renewed(true, 5_000);
        assert_eq!(back.generation, 11);
        assert_eq!(back.flaps, old.flaps.returned(5_000));
    }

    #[test]
    fn the_record_of_returns_travels_and_every_byte_counts() {
        // One IPv4 identity, byte for byte: name, family, address, port, generation, last
        // return, penalty.
        let n = NodeId {
            name: "n1".into(),
            addr: "192.0.2.7:7946".parse().unwrap(),
            generation: 0x0102_0304_0506_0708,
            flaps: Flaps {
                last_ms: 0x1112_1314_1516_1718,
                penalty: 0x2122_2324,
            },
        };
        let mut buf = Vec::new();
        put_id(&n, &mut buf).unwrap();
        let expected: Vec<u8> = [
            &[2, b'n', b'1', 4, 192, 0, 2, 7, 0x1f, 0x0a][..],
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18],
            &[0x21, 0x22, 0x23, 0x24],
        ]
        .concat();
        assert_eq!(buf, expected);
        assert_eq!(buf.len(), id_len(&n));
        assert_eq!(get_id(&mut &buf[..]).unwrap(), n);
        for cut in 0..buf.len() {
            assert_eq!(
                get_id(&mut &buf[..cut]),
                Err(CodecError::Truncated),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn bad_family_and_kind_are_errors() {
        let mut buf = vec![1, b'x', 5];
        assert_eq!(get_id(&mut &buf[..]).unwrap_err(), CodecError::BadFamily(5));
        buf.clear();
        let h = Header {
            src: id("a", "192.0.2.1:1", 0),
            src_incarnation: 0,
            dst: id("b", "192.0.2.2:1", 0),
            message: Message::Gossip,
        };
        WireCodec.encode_header(&h, &mut buf).unwrap();
        let last = buf.len() - 1;
        buf[last] = 200;
        assert_eq!(
            WireCodec.decode_header(&buf[..]).unwrap_err(),
            CodecError::BadKind(200)
        );
    }
}
