package sample

import (
	"bytes"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultFilesystemInterval is how often Collect re-reads the mount table
// and asks statfs of each mount (and re-reads the hostname): use changes
// slowly, and a statfs of a network filesystem is a round trip to its
// server.
const DefaultFilesystemInterval = 10 * time.Second

// DefaultStatfsTimeout is how long one refresh waits for the mounts'
// statfs answers, all asked at once; a mount that has not answered by
// then is reported NotAnswering.
const DefaultStatfsTimeout = 500 * time.Millisecond

// StatfsFunc is statfs(2); the Collector's is replaceable for tests.
type StatfsFunc func(path string, st *unix.Statfs_t) error

// networkTypes are the filesystem types whose use is the server's, not
// the node's: left out unless Collector.NetworkFilesystems is set (a
// thousand nodes would all report the same /home, and each statfs is a
// round trip that can hang).
var networkTypes = map[string]bool{
	"nfs": true, "nfs4": true, "cifs": true, "smb3": true, "smbfs": true, "ceph": true,
	"glusterfs": true, "lustre": true, "9p": true, "afs": true, "gpfs": true, "beegfs": true,
	"fuse.sshfs": true, "fuse.glusterfs": true, "fuse.ceph": true, "davfs": true, "ncpfs": true,
}

// localTypes are disk filesystems whose device is not a path under /dev.
var localTypes = map[string]bool{"zfs": true}

// mount is one line of /proc/mounts that the collector keeps.
type mount struct {
	dev, dir, typ string
}

// parseMounts reads /proc/mounts into ms (reused): the filesystems backed
// by a device (or, with network, a server), at most MaxFilesystems, each
// device once (bind mounts and subvolumes show the same use again).
// Pseudo filesystems (proc, sysfs, tmpfs, overlay, ...) are left out.
func parseMounts(b []byte, ms []mount, network bool) []mount {
	ms = ms[:0]
	for len(b) > 0 && len(ms) < MaxFilesystems {
		var line []byte
		line, b = nextLine(b)
		dev, rest := nextField(line)
		dir, rest := nextField(rest)
		typ, _ := nextField(rest)
		if len(typ) == 0 {
			continue
		}
		switch {
		case networkTypes[string(typ)]:
			if !network {
				continue
			}
		case bytes.HasPrefix(dev, []byte("/dev/")) || localTypes[string(typ)]:
		default:
			continue
		}
		seen := false
		for i := range ms {
			if ms[i].dev == string(dev) {
				seen = true
				break
			}
		}
		if seen {
			continue
		}
		ms = append(ms, mount{dev: string(dev), dir: unescapeMount(dir), typ: string(typ)})
	}
	return ms
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for a space).
func unescapeMount(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+4 <= len(b) {
			if v, err := strconv.ParseUint(string(b[i+1:i+4]), 8, 8); err == nil {
				out = append(out, byte(v))
				i += 3
				continue
			}
		}
		out = append(out, b[i])
	}
	return string(out)
}

// statfsProbe remembers the statfs call of one mount point, so that a
// mount that hangs costs one goroutine (and the thread it blocks) for as
// long as it hangs, never one per refresh.
type statfsProbe struct {
	done chan statfsAnswer // buffered: the call never waits for a reader
	busy bool              // a call is out and has not answered
}

type statfsAnswer struct {
	st  unix.Statfs_t
	err error
}

// maxProbes bounds the remembered mount points, hung ones included.
const maxProbes = 2 * MaxFilesystems

// refreshFilesystems asks statfs of every mount at once and waits up to
// the timeout for the answers. A mount whose previous call is still out is
// not asked again: it is reported NotAnswering until that call returns.
func (c *Collector) refreshFilesystems(mounts []mount) {
	if c.probes == nil {
		c.probes = make(map[string]*statfsProbe)
	}
	for dir, p := range c.probes {
		if !p.busy && !hasMount(mounts, dir) {
			delete(c.probes, dir)
		}
	}
	fss := c.filesystems[:0]
	asked := c.asked[:0]
	for _, m := range mounts {
		fs := Filesystem{Mount: m.dir, Type: m.typ}
		p := c.probes[m.dir]
		switch {
		case p == nil && len(c.probes) >= maxProbes:
			fs.NotAnswering = true
		case p == nil:
			p = &statfsProbe{done: make(chan statfsAnswer, 1)}
			c.probes[m.dir] = p
		}
		if p != nil && p.busy {
			select {
			case <-p.done: // a late answer: ask again below
				p.busy = false
			default:
				fs.NotAnswering = true
			}
		}
		if !fs.NotAnswering {
			p.busy = true
			go func(statfs StatfsFunc, dir string, done chan<- statfsAnswer) {
				var a statfsAnswer
				a.err = statfs(dir, &a.st)
				done <- a
			}(c.Statfs, m.dir, p.done)
			asked = append(asked, len(fss))
		}
		fss = append(fss, fs)
	}
	c.asked = asked

	timer := time.NewTimer(c.StatfsTimeout)
	defer timer.Stop()
	expired := false
	kept := fss[:0]
	next := 0 // index into asked
	for i := range fss {
		fs := fss[i]
		if next < len(asked) && asked[next] == i {
			next++
			p := c.probes[fs.Mount]
			var a statfsAnswer
			got := false
			if !expired {
				select {
				case a = <-p.done:
					got = true
				case <-timer.C:
					expired = true
				}
			}
			if !got {
				select {
				case a = <-p.done:
					got = true
				default:
				}
			}
			if got {
				p.busy = false
				if a.err != nil {
					c.statfsWarn(fs.Mount, a.err)
					continue // unreadable (gone, no permission): left out
				}
				bs := uint64(a.st.Bsize)
				if a.st.Frsize > 0 {
					bs = uint64(a.st.Frsize)
				}
				fs.Total, fs.Free, fs.Avail = a.st.Blocks*bs, a.st.Bfree*bs, a.st.Bavail*bs
				fs.Files, fs.FilesFree = a.st.Files, a.st.Ffree
			} else {
				fs.NotAnswering = true
			}
		}
		if fs.NotAnswering {
			c.notAnsweringWarn(fs.Mount)
		}
		kept = append(kept, fs)
	}
	c.filesystems = kept
}

func hasMount(ms []mount, dir string) bool {
	for i := range ms {
		if ms[i].dir == dir {
			return true
		}
	}
	return false
}

// statfsWarn and notAnsweringWarn log a mount's trouble once per mount
// point, not once per refresh.
func (c *Collector) statfsWarn(dir string, err error) {
	if c.warned[dir] {
		return
	}
	c.warnedMount(dir)
	c.log.Warn("statfs failed; filesystem left out", "mount", dir, "err", err)
}

func (c *Collector) notAnsweringWarn(dir string) {
	if c.warned[dir] {
		return
	}
	c.warnedMount(dir)
	c.log.Warn("filesystem does not answer statfs; reported as not answering, not waited for", "mount", dir, "timeout", c.StatfsTimeout)
}

func (c *Collector) warnedMount(dir string) {
	if c.warned == nil {
		c.warned = make(map[string]bool)
	}
	if len(c.warned) < maxProbes {
		c.warned[dir] = true
	}
}
