//! A small synchronous netlink client.
//!
//! One [`Netlink`] handle is one socket bound to the namespace it was opened in: open a
//! container's handle with [`Netlink::in_netns`] and use it from any thread afterwards. Errors
//! keep the kernel's errno so callers match on codes (EEXIST, ENODEV...), never on text.

mod addr;
mod link;
mod netconf;
mod route;

pub use addr::{Address, IFA_F_DADFAILED, IFA_F_TENTATIVE};
pub use link::{
    IPV4_DEVCONF_ARP_NOTIFY, IPV4_DEVCONF_ROUTE_LOCALNET, Link, LinkKind, OPER_UP, VLAN_PVID,
    VLAN_UNTAGGED, VethSpec, format_mac, parse_mac,
};
pub use route::RouteSpec;

use crate::netns::{NetNs, NsError};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    socket,
};
use std::os::fd::{AsRawFd, OwnedFd};

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_ECHO: u16 = 0x8;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const HDR: usize = 16;
const DUMP_RETRIES: usize = 10;
/// The buffer a large dump is received into: the kernel's largest dump datagram.
const DUMP_BUF: usize = 32 * 1024;
/// A dump datagram at least this large (half the kernel's default) announces a large dump.
const DUMP_GROW_AT: usize = 2048;

/// A netlink failure.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused an operation.
    #[error("{op}: {errno}")]
    Kernel { op: String, errno: Errno },
    /// The socket itself failed.
    #[error("netlink socket: {0}")]
    Socket(Errno),
    /// Opening a handle inside a namespace failed.
    #[error(transparent)]
    Netns(#[from] NsError),
    /// The kernel's answer could not be understood.
    #[error("netlink: {0}")]
    Protocol(String),
}

impl NetlinkError {
    /// The errno, if the kernel returned one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { errno, .. } | NetlinkError::Socket(errno) => Some(*errno),
            _ => None,
        }
    }

    /// EEXIST: the object already exists.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST)
    }

    /// ERESTART: an nf_tables transaction was refused because the ruleset changed since the
    /// generation it was planned on; plan again from a fresh listing.
    pub fn is_restart(&self) -> bool {
        self.errno() == Some(Errno::ERESTART)
    }

    /// ENODEV / ENOENT / ESRCH / EADDRNOTAVAIL: the object is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(Errno::ENODEV | Errno::ENOENT | Errno::ESRCH | Errno::EADDRNOTAVAIL)
        )
    }

    pub(crate) fn kernel(op: impl Into<String>, errno: Errno) -> NetlinkError {
        NetlinkError::Kernel {
            op: op.into(),
            errno,
        }
    }
}

/// A received netlink message.
pub(crate) struct Message {
    pub ty: u16,
    pub payload: Vec<u8>,
}

/// A raw netlink socket with request/ack and dump helpers.
pub(crate) struct Socket {
    /// Always `Some` until dropped (taken by `Drop`).
    fd: Option<OwnedFd>,
    seq: u32,
    buf: Vec<u8>,
    /// `NETLINK_NETFILTER`: released by the kernel, not by the closing process (see `Drop`).
    netfilter: bool,
}

/// Releasing a netfilter netlink socket makes nf_tables finish its deferred destruction of
/// the namespace's deleted rules first, which waits for an RCU grace period (10–17 ms): the
/// closing process, often exiting, blocks until then, although every change it made is long
/// committed. So the last reference is handed to the kernel instead: the socket is sent, with
/// one end of a new socket pair, into that same end (a reference cycle only the AF_UNIX
/// garbage collector can break) and both ends are closed. Since Linux 6.8 the collector runs
/// in a workqueue, so the release, and its wait, happen there after the process is gone; on
/// older kernels the collector runs in the closing process, which then waits as before. On
/// any failure the socket is simply closed.
impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take()
            && self.netfilter
        {
            release_in_background(fd);
        }
    }
}

fn release_in_background(fd: OwnedFd) {
    use nix::sys::socket::{ControlMessage, UnixAddr, sendmsg, socketpair};
    let Ok((inner, outer)) = socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    ) else {
        return;
    };
    let fds = [fd.as_raw_fd(), inner.as_raw_fd()];
    let _ = sendmsg::<UnixAddr>(
        outer.as_raw_fd(),
        &[std::io::IoSlice::new(&[0])],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT,
        None,
    );
    // Every descriptor but `outer` first: releasing `outer` schedules the collector, which
    // must then find the socket and `inner` referenced only from `inner`'s queue.
    drop(fd);
    drop(inner);
    drop(outer);
}

impl Socket {
    /// Opens a socket in the calling thread's namespace.
    pub fn open(protocol: SockProtocol) -> Result<Socket, NetlinkError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(NetlinkError::Socket)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
        Ok(Socket {
            fd: Some(fd),
            seq: 0,
            buf: Vec::new(),
            netfilter: protocol == SockProtocol::NetlinkNetFilter,
        })
    }

    /// The descriptor (-1 once dropped, which never happens while `self` is usable).
    fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Receives one datagram into `self.buf`, which grows to fit it: a peek learns its
    /// length first. A buffer sized for the largest possible answer up front (64 KiB, zeroed)
    /// was a sixth of a plugin's peak memory; this one takes what the answers need (large
    /// dumps grow it to 32 KiB, see `receive`).
    fn recv_one(&mut self, flags: MsgFlags) -> Result<usize, Errno> {
        let fd = self.raw();
        let peek = flags | MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC;
        let len = loop {
            match recv(fd, &mut [], peek) {
                Err(Errno::EINTR) => continue,
                other => break other?,
            }
        };
        if len > self.buf.len() {
            self.buf.resize(len, 0);
        }
        loop {
            match recv(fd, &mut self.buf, flags) {
                Err(Errno::EINTR) => continue,
                other => return other,
            }
        }
    }

    fn send(&mut self, ty: u16, flags: u16, payload: &[u8]) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let len = HDR + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        sendto(self.raw(), &msg, &NetlinkAddr::new(0, 0), MsgFlags::empty())
            .map_err(NetlinkError::Socket)?;
        Ok(self.seq)
    }

    /// Receives the messages answering `seq` until an ack/error (request) or DONE (dump).
    /// Returns the messages and whether the dump was interrupted.
    fn receive(&mut self, seq: u32, op: &str) -> Result<(Vec<Message>, bool), NetlinkError> {
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self
                .recv_one(MsgFlags::empty())
                .map_err(NetlinkError::Socket)?;
            let mut data = &self.buf[..n];
            while data.len() >= HDR {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                if len < HDR || len > data.len() {
                    return Err(NetlinkError::Protocol(format!("{op}: truncated message")));
                }
                let ty = u16::from_ne_bytes([data[4], data[5]]);
                let flags = u16::from_ne_bytes([data[6], data[7]]);
                let mseq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                let payload = &data[HDR..len];
                data = &data[align(len).min(data.len())..];
                if mseq != seq {
                    continue;
                }
                if flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if code == 0 {
                            return Ok((out, interrupted));
                        }
                        return Err(NetlinkError::kernel(op, Errno::from_raw(-code)));
                    }
                    NLMSG_DONE => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if code < 0 {
                            return Err(NetlinkError::kernel(op, Errno::from_raw(-code)));
                        }
                        return Ok((out, interrupted));
                    }
                    _ => out.push(Message {
                        ty,
                        payload: payload.to_vec(),
                    }),
                }
            }
            // More to come (a dump), and this datagram was a well-filled one (most dumps end
            // with a small one holding DONE): the kernel sizes each further datagram by the
            // largest buffer this socket has received into, up to 32 KiB. A buffer of that
            // size means a few large datagrams instead of a round trip per handful of rules or
            // links; small dumps keep a small buffer (memory of every invocation).
            if n >= DUMP_GROW_AT && self.buf.len() < DUMP_BUF {
                self.buf.resize(DUMP_BUF, 0);
            }
        }
    }

    /// Sends a request with `NLM_F_ACK` and returns any replies that came before the ack.
    pub fn request(
        &mut self,
        ty: u16,
        flags: u16,
        payload: &[u8],
        op: &str,
    ) -> Result<Vec<Message>, NetlinkError> {
        let seq = self.send(ty, flags | NLM_F_ACK, payload)?;
        self.receive(seq, op).map(|(m, _)| m)
    }

    /// Sends several messages in one datagram (an nfnetlink batch) and collects the kernel's
    /// answers. nfnetlink processes a batch synchronously inside the send, so every ack and
    /// error is queued when `sendto` returns: they are read without blocking. Returns the
    /// first error the kernel reported (for any message of the batch), if any.
    ///
    /// The `count` messages are encoded in place: `encode(i, b)` appends the payload of
    /// message `i` to `b` and returns its type and flags (no buffer per message: a batch can
    /// hold thousands of rules).
    pub(crate) fn batch(
        &mut self,
        count: usize,
        op: &str,
        mut encode: impl FnMut(usize, &mut Builder) -> (u16, u16),
    ) -> Result<(), NetlinkError> {
        let mut b = Builder {
            buf: Vec::with_capacity(count.saturating_mul(256).min(16 << 20)),
        };
        let first_seq = self.seq.wrapping_add(1);
        for i in 0..count {
            self.seq = self.seq.wrapping_add(1);
            let start = b.buf.len();
            b.buf.extend_from_slice(&[0; HDR]);
            let (ty, flags) = encode(i, &mut b);
            let len = (b.buf.len() - start) as u32;
            let hdr = &mut b.buf[start..start + HDR];
            hdr[0..4].copy_from_slice(&len.to_ne_bytes());
            hdr[4..6].copy_from_slice(&ty.to_ne_bytes());
            hdr[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
            hdr[8..12].copy_from_slice(&self.seq.to_ne_bytes());
            b.buf.resize(align(b.buf.len()), 0);
        }
        let ours = |seq: u32| (seq.wrapping_sub(first_seq) as usize) < count;
        let buf = b.buf;
        // A netlink message must fit the socket's send buffer (default about 200 KiB);
        // large batches (thousands of port mappings) raise it, as nft does.
        if buf.len() > 128 * 1024
            && let Some(fd) = &self.fd
        {
            let _ = nix::sys::socket::setsockopt(
                fd,
                nix::sys::socket::sockopt::SndBufForce,
                &(buf.len() * 2),
            );
        }
        sendto(self.raw(), &buf, &NetlinkAddr::new(0, 0), MsgFlags::empty())
            .map_err(NetlinkError::Socket)?;
        let mut first_err: Option<Errno> = None;
        loop {
            let n = match self.recv_one(MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                // Answers were lost (ENOBUFS): the outcome is unknown, which callers treat as
                // a failure and answer with a fresh look at the state.
                Err(e) => return Err(NetlinkError::Socket(e)),
            };
            let mut data = &self.buf[..n];
            while data.len() >= HDR {
                let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
                if len < HDR || len > data.len() {
                    return Err(NetlinkError::Protocol(format!("{op}: truncated message")));
                }
                let ty = u16::from_ne_bytes([data[4], data[5]]);
                let mseq = u32::from_ne_bytes([data[8], data[9], data[10], data[11]]);
                let payload = &data[HDR..len];
                data = &data[align(len).min(data.len())..];
                if ty != NLMSG_ERROR || !ours(mseq) {
                    continue;
                }
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if code != 0 && first_err.is_none() {
                    first_err = Some(Errno::from_raw(-code));
                }
            }
        }
        match first_err {
            Some(errno) => Err(NetlinkError::kernel(op, errno)),
            None => Ok(()),
        }
    }

    /// A dump, retried while the kernel reports it was interrupted by a concurrent change.
    pub fn dump(
        &mut self,
        ty: u16,
        payload: &[u8],
        op: &str,
    ) -> Result<Vec<Message>, NetlinkError> {
        for _ in 0..DUMP_RETRIES {
            let seq = self.send(ty, NLM_F_DUMP, payload)?;
            let (msgs, interrupted) = self.receive(seq, op)?;
            if !interrupted {
                return Ok(msgs);
            }
        }
        Err(NetlinkError::kernel(op, Errno::EINTR))
    }
}

pub(crate) fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds a message payload: a fixed header followed by attributes.
pub(crate) struct Builder {
    pub buf: Vec<u8>,
}

impl Builder {
    pub fn new(header: &[u8]) -> Builder {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(header);
        Builder { buf }
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Builder {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    pub fn u8(&mut self, ty: u16, v: u8) -> &mut Builder {
        self.attr(ty, &[v])
    }

    pub fn u16(&mut self, ty: u16, v: u16) -> &mut Builder {
        self.attr(ty, &v.to_ne_bytes())
    }

    pub fn u32(&mut self, ty: u16, v: u32) -> &mut Builder {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Builder {
        let len = 4 + s.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// A nested attribute; `flag_nested` sets `NLA_F_NESTED`.
    pub fn nest(
        &mut self,
        ty: u16,
        flag_nested: bool,
        f: impl FnOnce(&mut Builder),
    ) -> &mut Builder {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        f(self);
        let len = (self.buf.len() - start) as u16;
        let ty = if flag_nested { ty | NLA_F_NESTED } else { ty };
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&ty.to_ne_bytes());
        self
    }
}

/// Iterates the attributes in `buf` as `(type, data)`; stops at the first malformed one.
pub(crate) fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

pub(crate) fn attr_u32(d: &[u8]) -> Option<u32> {
    d.get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn attr_str(d: &[u8]) -> String {
    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    String::from_utf8_lossy(&d[..end]).into_owned()
}

/// A route-netlink handle bound to one network namespace.
pub struct Netlink {
    pub(crate) sock: Socket,
}

impl Netlink {
    /// A handle in the calling thread's namespace (normally the host).
    pub fn current() -> Result<Netlink, NetlinkError> {
        Ok(Netlink {
            sock: Socket::open(SockProtocol::NetlinkRoute)?,
        })
    }

    /// A handle in `ns`: the socket is created inside `ns` ([`NetNs::run`]) and stays bound
    /// there.
    pub fn in_netns(ns: &NetNs) -> Result<Netlink, NetlinkError> {
        ns.run(Netlink::current)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_roundtrip() {
        let mut b = Builder::new(&[1, 2, 3, 4]);
        b.str(3, "eth0").u32(4, 1500).nest(18, true, |b| {
            b.str(1, "veth");
        });
        let a = attrs(&b.buf[4..]);
        assert_eq!(a.len(), 3);
        assert_eq!(attr_str(a[0].1), "eth0");
        assert_eq!(attr_u32(a[1].1), Some(1500));
        assert_eq!(a[2].0, 18);
        let inner = attrs(a[2].1);
        assert_eq!(attr_str(inner[0].1), "veth");
        assert_eq!(align(5), 8);
        // A malformed tail is ignored.
        assert!(attrs(&[9, 0, 1]).is_empty());
    }
}
