package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/hoststat/hoststat/nsm/nfsutils"
)

// applyConf sets each option nfs.conf's [statd] (or [sm-notify], for the
// outgoing port) gives, unless the command line set it: the command line
// wins, as with nfs-utils. The state directory nfs.conf names is where
// nfs-utils kept its state, so it is also the default directory imported.
func applyConf(c nfsutils.Conf, fs *pflag.FlagSet, port, outPort *int, ourName, stateDir, haCallout, nfsDir *string) error {
	ints := []struct {
		key, flag string
		v         *int
	}{{"port", "port", port}, {"outgoing-port", "outgoing-port", outPort}}
	for _, i := range ints {
		s, ok := c.Get(i.key)
		if !ok || fs.Changed(i.flag) {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%s = %q is not a port number", i.key, s)
		}
		*i.v = n
	}
	strs := []struct {
		key, flag string
		v         *string
	}{{"name", "name", ourName}, {"state-directory-path", "state-directory-path", stateDir}, {"ha-callout", "ha-callout", haCallout}}
	for _, s := range strs {
		if v, ok := c.Get(s.key); ok && v != "" && !fs.Changed(s.flag) {
			*s.v = v
		}
	}
	if v, ok := c.Get("state-directory-path"); ok && v != "" && !fs.Changed("nfs-utils-dir") {
		*nfsDir = v
	}
	return nil
}
