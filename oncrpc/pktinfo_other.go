//go:build !linux

package oncrpc

import (
	"net"
	"net/netip"
)

// Elsewhere replies leave from whatever address the route picks.

func enablePacketInfo(*net.UDPConn) (v6, ok bool) { return false, false }

func packetDest([]byte) (netip.Addr, int, bool) { return netip.Addr{}, 0, false }

func replySourceOOB(netip.Addr, int, bool) []byte { return nil }
