//! Memory the kernel holds in an execution's socket buffers, for the fallback backend (cgroup v2
//! charges it to the execution's cgroup by itself).
//!
//! Every socket a sandbox creates belongs to its own network namespace, including sockets
//! parked in flight inside another socket (`SCM_RIGHTS`), which no descriptor table shows. So
//! the meter asks the kernel for every socket of that namespace: `sock_diag` for unix, TCP and
//! UDP sockets over IPv4 and IPv6, with their queued bytes, and `/proc/<init>/net/netlink` for
//! netlink sockets. The meter's own socket is opened inside the namespace by a short-lived
//! thread that enters it, as the egress proxy's listener is.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{self, ExtensionFlags, InetRequest, SocketId};
use netlink_packet_sock_diag::unix::{self, ShowFlags, UnixRequest};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};

pub struct SocketMeter {
    socket: Socket,
    /// The host pid of the sandbox's init, whose `/proc/<pid>/net` is the sandbox's.
    init: i32,
}

impl SocketMeter {
    /// A meter for the network namespace of the process behind `pidfd` (the sandbox's init,
    /// host pid `init`).
    pub fn open(pidfd: BorrowedFd<'_>, init: i32) -> io::Result<SocketMeter> {
        let pidfd = pidfd.try_clone_to_owned()?;
        let socket = std::thread::spawn(move || -> io::Result<Socket> {
            nix::sched::setns(pidfd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(socket)
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))??;
        Ok(SocketMeter { socket, init })
    }

    /// Bytes queued in every socket of the sandbox: received and not read, sent and not yet
    /// consumed (a unix socket's data is charged to its sender until the receiver reads it).
    pub fn queued_bytes(&mut self) -> io::Result<u64> {
        let unix = SockDiagMessage::UnixRequest(UnixRequest {
            // Every state, bound or not, connected or not.
            state_flags: unix::StateFlags::from_bits_retain(u32::MAX),
            inode: 0,
            show_flags: ShowFlags::RQLEN,
            cookie: [0xff; 8],
        });
        let mut total = self.dump(unix)?;
        for family in [AF_INET, AF_INET6] {
            for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
                let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
                total += self.dump(SockDiagMessage::InetRequest(InetRequest {
                    family,
                    protocol,
                    extensions: ExtensionFlags::SKMEMINFO,
                    states: inet::StateFlags::all(),
                    socket_id,
                }))?;
            }
        }
        let netlink = std::fs::read_to_string(format!("/proc/{}/net/netlink", self.init))?;
        Ok(total + netlink_queues(&netlink))
    }

    /// Sends one dump request and sums the queued bytes of every socket in the answer.
    fn dump(&mut self, request: SockDiagMessage) -> io::Result<u64> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut packet = NetlinkMessage::new(header, request.into());
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let mut total = 0u64;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let size = self.socket.recv(&mut &mut buffer[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buffer[offset..size])
                    .map_err(|e| io::Error::other(format!("malformed sock_diag answer: {e}")))?;
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(socket)) => {
                        total += unix_queued(&socket);
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(socket)) => {
                        total += inet_queued(&socket);
                    }
                    NetlinkPayload::Done(_) => return Ok(total),
                    NetlinkPayload::Error(e) => {
                        return Err(e.to_io());
                    }
                    _ => {}
                }
                let length = message.header.length as usize;
                if length == 0 {
                    break;
                }
                // Messages of a multipart answer are aligned to 4 bytes.
                offset += length.next_multiple_of(4);
            }
        }
    }
}

/// A unix socket's received bytes and the bytes it sent that are not yet read.
fn unix_queued(socket: &unix::UnixResponse) -> u64 {
    socket
        .nlas
        .iter()
        .find_map(|nla| match nla {
            unix::nlas::Nla::ReceiveQueueLength(received, sent) if socket.header.state != LISTENING => {
                Some(u64::from(*received) + u64::from(*sent))
            }
            _ => None,
        })
        .unwrap_or(0)
}

/// `TCP_LISTEN`: a listening unix socket reports its backlog in RQLEN, not bytes.
const LISTENING: u8 = 10;

/// An IP socket's memory: its receive queue, its send queue and what lower layers hold of it,
/// its option memory and its backlog.
fn inet_queued(socket: &inet::InetResponse) -> u64 {
    socket
        .nlas
        .iter()
        .find_map(|nla| match nla {
            inet::nlas::Nla::MemInfo(m) => Some(
                [m.receive_queue, m.send_queue.max(m.bottom_send_queues), m.options, m.backlog_queue_length]
                    .into_iter()
                    .map(u64::from)
                    .sum(),
            ),
            _ => None,
        })
        .unwrap_or(0)
}

/// The `Rmem` and `Wmem` columns of `/proc/net/netlink`, summed.
fn netlink_queues(table: &str) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            Some(columns.get(4)?.parse::<u64>().ok()? + columns.get(5)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Whether this host lets the daemon measure socket buffers: `Err` says why not.
pub fn probe() -> Result<(), String> {
    let own = crate::sys::pidfd_open(std::process::id() as i32).map_err(|e| e.to_string())?;
    SocketMeter::open(own.as_fd(), std::process::id() as i32)
        .and_then(|mut meter| meter.queued_bytes())
        .map(|_| ())
        .map_err(|e| format!("sock_diag failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_table() {
        let table = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
                     0000000076186c7e 0   0          00000000 4096     0        0     2        0        4\n\
                     00000000064ed733 4   0          00000000 0        768      0     2        0        1583\n";
        assert_eq!(netlink_queues(table), 4096 + 768);
    }
}
