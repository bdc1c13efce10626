package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash"
)

// Packet is a datagram that passed Parse. Its payload refers to the
// datagram's bytes, so the buffer must not be reused while the Packet is.
type Packet struct {
	Header
	payload []byte
	ranges  ranges
}

// Parser checks datagrams. It is not safe for concurrent use: give each
// receiving goroutine its own.
type Parser struct {
	mac hash.Hash // nil without a key
	sum [MACLen]byte
}

// NewParser returns a Parser that requires every datagram to be
// authenticated with key, or, when key is empty, accepts datagrams with or
// without a MAC and checks none.
func NewParser(key []byte) *Parser {
	p := &Parser{}
	if len(key) > 0 {
		p.mac = hmac.New(sha256.New, key)
	}
	return p
}

// Parse checks one datagram: magic, version, size, MAC, header and the
// structure of the whole payload, so that an Assembler can later decode
// it without failing. Errors wrap ErrVersion, ErrTruncated, ErrOversize,
// ErrMalformed or ErrAuth.
func (p *Parser) Parse(b []byte) (Packet, error) {
	pk, err := p.parseHeader(b)
	if err == nil && pk.Kind == KindStatus {
		r := reader{b: pk.payload, off: pk.ranges.body}
		walkStatus(&r, &pk.Header, &pk.ranges, nil)
		err = r.err
	}
	return pk, err
}

// parseHeader makes every check of Parse but the walk of a status body:
// it reads a status payload's ranges only.
func (p *Parser) parseHeader(b []byte) (Packet, error) {
	var pk Packet
	switch {
	case len(b) < 5:
		return pk, fmt.Errorf("%w: %d bytes", ErrTruncated, len(b))
	case [4]byte(b[:4]) != magic:
		return pk, fmt.Errorf("%w: bad magic % x", ErrMalformed, b[:4])
	case b[4] != Version:
		return pk, fmt.Errorf("%w: version %d", ErrVersion, b[4])
	case len(b) > MaxDatagram:
		return pk, fmt.Errorf("%w: %d bytes", ErrOversize, len(b))
	case len(b) < HeaderLen:
		return pk, fmt.Errorf("%w: %d bytes, header is %d", ErrTruncated, len(b), HeaderLen)
	}
	readHeader(b, &pk.Header)
	h := &pk.Header
	if h.Flags&^FlagAuthenticated != 0 {
		return pk, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, h.Flags)
	}
	end := len(b)
	if h.Flags&FlagAuthenticated != 0 {
		if len(b) < HeaderLen+MACLen {
			return pk, fmt.Errorf("%w: %d bytes, too short for a MAC", ErrTruncated, len(b))
		}
		end -= MACLen
		if p.mac != nil {
			p.mac.Reset()
			p.mac.Write(b[:end])
			if !hmac.Equal(p.mac.Sum(p.sum[:0]), b[end:]) {
				return pk, fmt.Errorf("%w: MAC does not match the key", ErrAuth)
			}
		}
	} else if p.mac != nil {
		return pk, fmt.Errorf("%w: datagram has no MAC", ErrAuth)
	}
	pk.payload = b[HeaderLen:end]
	if h.Parts == 0 || h.Part >= h.Parts || h.Parts > MaxParts {
		return pk, fmt.Errorf("%w: part %d of %d", ErrMalformed, h.Part, h.Parts)
	}
	switch h.Kind {
	case KindUpdateRequest:
		if h.Parts != 1 || len(pk.payload) != 0 {
			return pk, fmt.Errorf("%w: update request with %d parts and %d payload bytes", ErrMalformed, h.Parts, len(pk.payload))
		}
	case KindStatus:
		r := reader{b: pk.payload}
		pk.ranges = readRanges(&r, h)
		if r.err != nil {
			return pk, r.err
		}
	case KindDetails:
		if h.Parts != 1 {
			return pk, fmt.Errorf("%w: details in %d parts", ErrMalformed, h.Parts)
		}
		r := reader{b: pk.payload}
		walkDetails(&r, nil)
		if r.err != nil {
			return pk, r.err
		}
	default:
		return pk, fmt.Errorf("%w: %v", ErrMalformed, h.Kind)
	}
	return pk, nil
}
