package etcdstore

import (
	"context"
	"github.com/hoststat/hoststat/internal/etcdlab"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestParseURL(t *testing.T) {
	good := map[string]Config{
		"etcd://127.0.0.1:2379/hoststat":                  {Endpoints: []string{"127.0.0.1:2379"}, Prefix: "/hoststat"},
		"etcd://a.example:2379,b.example:2379/nfs/statd/": {Endpoints: []string{"a.example:2379", "b.example:2379"}, Prefix: "/nfs/statd"},
		"etcd://[::1]:2379,10.0.0.2:12379/x":              {Endpoints: []string{"[::1]:2379", "10.0.0.2:12379"}, Prefix: "/x"},
	}
	for in, want := range good {
		got, err := ParseURL(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"/var/lib/statd":           "not an etcd URL",
		"etcd://127.0.0.1:2379":    "no key prefix",
		"etcd://127.0.0.1:2379/":   "no key prefix",
		"etcd://127.0.0.1/p":       "not HOST:PORT",
		"etcd://127.0.0.1:0/p":     "bad port",
		"etcd://127.0.0.1:99999/p": "bad port",
		"etcd://a:1,,b:2/p":        "not HOST:PORT",
		"etcd://a:1/p//q":          "empty",
		"etcd://a:1/p/../q":        "'..'",
		"etcd://a:1/p q":           "space",
		"etcd://:2379/p":           "not HOST:PORT",
	}
	for in, want := range bad {
		if _, err := ParseURL(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURL(%q) error %v, want one saying %q", in, err, want)
		}
	}
}

func TestClientOptionsRefused(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(pw, link)
	cases := map[string]Config{
		"needs --etcd-password-file": {User: "u"},
		"needs --etcd-user":          {PasswordFile: pw},
		"readable by its owner only": {User: "u", PasswordFile: pw},
		"go together":                {Cert: pw},
		"symbolic link":              {CACert: link},
	}
	for want, c := range cases {
		c.Endpoints = []string{"127.0.0.1:1"}
		if cli, err := c.Client(); err == nil || !strings.Contains(err.Error(), want) {
			if cli != nil {
				cli.Close()
			}
			t.Errorf("%+v: error %v, want one saying %q", c, err, want)
		}
	}
	os.Chmod(pw, 0o600)
	if got, err := readPassword(pw); err != nil || got != "secret" {
		t.Fatalf("readPassword = %q, %v", got, err)
	}
	if _, err := readPassword(link); err == nil {
		t.Fatal("followed a symbolic link to the password file")
	}
}

// A user and password file, as etcdctl --user takes them, open a store on
// an etcd with authentication on; a wrong password does not.
func TestClientWithCredentials(t *testing.T) {
	c := etcdlab.Start(t, 1)
	admin := etcdlab.Client(t, c.Endpoints()...)
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("rootpw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseURL("etcd://" + strings.Join(c.Endpoints(), ",") + "/hoststat")
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.PasswordFile = "root", pw
	cli, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s := openStore(t, cli, IdentityPrefix(cfg.Prefix, "srv"))
	if res, err := s.Start("b", time.Now()); err != nil || res.State != 1 {
		t.Fatalf("start with credentials: %+v, %v", res, err)
	}
	os.WriteFile(pw, []byte("wrong\n"), 0o600)
	if bad, err := cfg.Client(); err == nil {
		defer bad.Close()
		if _, err := Open(ctx, bad, IdentityPrefix(cfg.Prefix, "srv"), Options{}); err == nil {
			t.Fatal("opened the store with a wrong password")
		}
	}
}

// The flags rpc.statd and statdctl share reach the Config.
func TestFlagsConfig(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	f := AddFlags(fs, "store")
	err := fs.Parse([]string{"--store", "etcd://a:1,b:2/p", "--etcd-cacert", "ca", "--etcd-cert", "c", "--etcd-key", "k",
		"--etcd-user", "u", "--etcd-password-file", "pw"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Config()
	want := Config{Endpoints: []string{"a:1", "b:2"}, Prefix: "/p", CACert: "ca", Cert: "c", Key: "k", User: "u", PasswordFile: "pw"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Config = %+v, %v; want %+v", got, err, want)
	}
	*f.Store = "etcd://a/p"
	if _, err := f.Config(); err == nil || !strings.Contains(err.Error(), "not HOST:PORT") {
		t.Fatalf("bad --store: %v", err)
	}
}
