package etcdstore

import "github.com/spf13/pflag"

// Flags are the command-line options naming an etcd store: --store and the
// client options etcdctl takes (--cacert, --cert, --key, --user), here with
// an etcd- prefix. rpc.statd and statdctl define them through AddFlags so
// both spell and document them alike.
type Flags struct {
	Store                                 *string
	cacert, cert, key, user, passwordFile *string
}

// AddFlags defines --store (with storeUsage as its help) and the
// --etcd-* options on fs.
func AddFlags(fs *pflag.FlagSet, storeUsage string) *Flags {
	return &Flags{
		Store:        fs.String("store", "", storeUsage),
		cacert:       fs.String("etcd-cacert", "", "verify etcd's TLS certificate with this CA bundle (PEM `FILE`; as etcdctl --cacert)"),
		cert:         fs.String("etcd-cert", "", "TLS client certificate for etcd (PEM `FILE`; as etcdctl --cert; needs --etcd-key)"),
		key:          fs.String("etcd-key", "", "TLS client key for etcd (PEM `FILE`; as etcdctl --key)"),
		user:         fs.String("etcd-user", "", "authenticate to etcd as this `USER` (as etcdctl --user; needs --etcd-password-file)"),
		passwordFile: fs.String("etcd-password-file", "", "first line of this `FILE` (mode 0600) is the --etcd-user password"),
	}
}

// Config parses --store as an etcd URL and adds the client options.
func (f *Flags) Config() (Config, error) {
	c, err := ParseURL(*f.Store)
	if err != nil {
		return Config{}, err
	}
	c.CACert, c.Cert, c.Key = *f.cacert, *f.cert, *f.key
	c.User, c.PasswordFile = *f.user, *f.passwordFile
	return c, nil
}
