package nsm

import (
	"encoding/binary"
	"io"
	"os"
	"slices"
)

// Salvage is what could be read from a damaged store without bbolt.
type Salvage struct {
	State         int32
	Registrations []Registration
	Owed          []string // hosts owed a notification or monitored: all are told of the reset
	Skipped       int      // pages or records that could not be read
}

// SalvageStore reads what it can of the damaged store at path with the
// same bounds checks as CheckStoreFile, skipping every page that fails
// them instead of stopping: the state number, the registrations and the
// hosts owed a notification found in the pages still intact. It never
// follows a symbolic link and never maps the file.
func SalvageStore(path string) (Salvage, error) {
	var sv Salvage
	f, size, err := openRegular(path)
	if err != nil {
		return sv, err
	}
	defer f.Close()
	salvageBolt(f, size, &sv)
	return sv, nil
}

func salvageBolt(r io.ReaderAt, size int64, sv *Salvage) {
	read := boundedReader(r, size)
	// Try both meta pages, newest first; a page size from a damaged meta
	// page is not trusted.
	var metas []boltMeta
	psize := int64(os.Getpagesize())
	for i := range int64(2) {
		if m, why := readMeta(read, i*psize, uint64(i)); why == "" && int64(m.pageSize) == psize {
			metas = append(metas, m)
		}
	}
	if len(metas) == 2 && metas[1].txid > metas[0].txid {
		metas[0], metas[1] = metas[1], metas[0]
	}
	for _, m := range metas {
		hwm := min(m.hwm, uint64(size/psize))
		c := &boltChecker{read: read, psize: psize, hwm: hwm, seen: map[uint64]bool{}}
		buckets := map[string][][2][]byte{}
		c.salvageTree(m.root, 0, func(k, v []byte, bucket bool) {
			if bucket && len(v) >= bBucketHdr && len(k) == 1 {
				name := string(k)
				c.salvageBucket(v, func(k, v []byte) { buckets[name] = append(buckets[name], [2][]byte{k, v}) }, &sv.Skipped)
			}
		}, &sv.Skipped)
		if len(buckets) == 0 {
			continue
		}
		decodeSalvage(buckets, sv)
		return
	}
}

// salvageBucket calls fn for every key and value of the bucket whose
// header (and inline page) is v.
func (c *boltChecker) salvageBucket(v []byte, fn func(k, v []byte), skipped *int) {
	ne := binary.NativeEndian
	visit := func(k, v []byte, bucket bool) {
		if !bucket {
			fn(k, v)
		}
	}
	if root := ne.Uint64(v); root != 0 {
		c.salvageTree(root, 0, visit, skipped)
		return
	}
	c.salvageLeaf(v[bBucketHdr:], visit, skipped)
}

// salvageTree walks the tree under id, skipping pages that fail the checks.
func (c *boltChecker) salvageTree(id uint64, depth int, fn func(k, v []byte, bucket bool), skipped *int) {
	if depth > bMaxDepth {
		return
	}
	p, why := c.page(id, bBranch|bLeaf)
	if why != "" {
		*skipped++
		return
	}
	ne := binary.NativeEndian
	if ne.Uint16(p[8:]) == bLeaf {
		c.salvageLeaf(p, fn, skipped)
		return
	}
	n := uint64(ne.Uint16(p[10:]))
	if bPageHeader+n*bElemSize > uint64(len(p)) {
		*skipped++
		return
	}
	for i := range n {
		c.salvageTree(ne.Uint64(p[bPageHeader+i*bElemSize+8:]), depth+1, fn, skipped)
	}
}

func (c *boltChecker) salvageLeaf(p []byte, fn func(k, v []byte, bucket bool), skipped *int) {
	ne := binary.NativeEndian
	if len(p) < bPageHeader || ne.Uint16(p[8:]) != bLeaf {
		*skipped++
		return
	}
	n, size := uint64(ne.Uint16(p[10:])), uint64(len(p))
	if bPageHeader+n*bElemSize > size {
		*skipped++
		return
	}
	for i := range n {
		e := bPageHeader + i*bElemSize
		fl, pos := ne.Uint32(p[e:]), uint64(ne.Uint32(p[e+4:]))
		ks, vs := uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
		if e+pos+ks+vs > size {
			*skipped++
			continue
		}
		fn(p[e+pos:e+pos+ks], p[e+pos+ks:e+pos+ks+vs], fl&bBucketLeaf != 0)
	}
}

// decodeSalvage turns the buckets' raw records into a Salvage, skipping
// what does not decode or breaks the name rules.
func decodeSalvage(b map[string][][2][]byte, sv *Salvage) {
	for _, kv := range b[string(bucketMeta)] {
		if string(kv[0]) == string(keyState) {
			if st, err := parseState(kv[1]); err == nil && st > sv.State {
				sv.State = st
			}
		}
	}
	ids := map[uint64]MyID{}
	for _, kv := range b[string(bucketIDs)] {
		m, err := parseMyIDKey(kv[0])
		n, l := uvarint(kv[1])
		if err != nil || l <= 0 {
			sv.Skipped++
			continue
		}
		ids[n] = m
	}
	hosts := map[string]bool{}
	for _, kv := range b[string(bucketRegs)] {
		name, n, err := parseRegKey(kv[0])
		my, ok := ids[n]
		if err != nil || !ok {
			sv.Skipped++
			continue
		}
		priv, at, err := parseRegValue(kv[1])
		id := MonID{MonName: name, MyID: my}
		if err != nil || id.Validate() != nil {
			sv.Skipped++
			continue
		}
		sv.Registrations = append(sv.Registrations, Registration{MonName: name, MyID: my, Priv: priv, Registered: at})
		hosts[name] = true
	}
	for _, kv := range b[string(bucketOwed)] {
		if ValidateMonName(string(kv[0])) != nil {
			sv.Skipped++
			continue
		}
		hosts[string(kv[0])] = true
	}
	for h := range hosts {
		sv.Owed = append(sv.Owed, h)
	}
	slices.Sort(sv.Owed)
}
