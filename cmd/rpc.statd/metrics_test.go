package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
)

// TestMetricsFlag: rpc.statd --metrics 127.0.0.1:PORT serves /metrics
// there, with the daemon's state number.
func TestMetricsFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(binary(t), "-F", "-P", t.TempDir(), "--no-rpcbind", "--nfs-utils-dir", "", "--kernel-state-path", "",
		"--name", "me.example.com", "--metrics", addr)
	var out netlab.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("rpc.statd output:\n%s", out.String())
		}
	}()
	state := regexp.MustCompile(`(?m)^hoststat_statd_state\{identity="me.example.com"\} 1$`)
	netlab.WaitFor(t, 10*time.Second, "/metrics served with state 1", func() error {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !state.Match(body) {
			return fmt.Errorf("%d, no state 1 in %.200q", resp.StatusCode, body)
		}
		return nil
	})
}
