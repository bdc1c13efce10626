module github.com/hoststat/hoststat

go 1.26.0

require (
	github.com/prometheus/procfs v0.23.0
	github.com/spf13/pflag v1.0.10
	go.etcd.io/bbolt v1.5.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require github.com/coreos/go-systemd/v22 v22.7.0 // indirect
