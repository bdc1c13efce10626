package oncrpc

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// A server on a wildcard UDP address answers from the address each call was
// sent to, learnt from IP_PKTINFO / IPV6_PKTINFO: otherwise the kernel picks
// the source by route, and a client with a connected socket (the kernel's
// RPC client, ours) drops a reply from an address it did not call.

// enablePacketInfo asks for each datagram's destination address; it
// reports whether the socket is IPv6 (dual-stack sockets included) and
// whether that worked.
func enablePacketInfo(c *net.UDPConn) (v6, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		var domain int
		if domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); serr != nil {
			return
		}
		v6 = domain == unix.AF_INET6
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	return v6, err == nil && serr == nil
}

// packetDest finds the destination address and interface in oob.
func packetDest(oob []byte) (netip.Addr, int, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			var a [4]byte
			copy(a[:], m.Data[8:12]) // ipi_addr: the header's destination
			ifindex := int(int32(binary.NativeEndian.Uint32(m.Data[0:4])))
			return netip.AddrFrom4(a), ifindex, true
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			var a [16]byte
			copy(a[:], m.Data[0:16])
			ifindex := int(binary.NativeEndian.Uint32(m.Data[16:20]))
			return netip.AddrFrom16(a), ifindex, true
		}
	}
	return netip.Addr{}, 0, false
}

// replySourceOOB is the control message that sends a reply from src.
func replySourceOOB(src netip.Addr, ifindex int, v6 bool) []byte {
	if !v6 {
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: src.Unmap().As4()})
	}
	info := unix.Inet6Pktinfo{Addr: src.As16()}
	if src.IsLinkLocalUnicast() {
		info.Ifindex = uint32(ifindex) // a link-local source names its link
	}
	return unix.PktInfo6(&info)
}
