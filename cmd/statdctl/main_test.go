package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/statd"
)

func TestPrintText(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &statd.Status{Name: "me", State: 7, Pid: 42, StateDir: "/x", Started: now,
		Listeners: []string{"udp 0.0.0.0:600"},
		Monitored: []statd.Monitored{{MonName: "peer", Registrants: []statd.Registrant{
			{MyName: "me", Prog: 100021, Vers: 4, Proc: 16, Priv: "00ff"}, {MyName: "me", Prog: 300000, Vers: 1, Proc: 1, Priv: "01"}}}},
		Owed: []statd.Owed{{Host: "gone", State: 7, Since: now, Attempts: 3, NextTry: now.Add(90 * time.Second), LastErr: "timeout"}},
	}
	var sb strings.Builder
	printText(&sb, st, now)
	out := sb.String()
	for _, want := range []string{`rpc.statd "me"  state 7  pid 42`, "monitored hosts: 1 (2 registrations)", "peer", "100021", "300000",
		"notifications owed: 1", "gone", "(in 1m30s)", "timeout"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestNoDaemon(t *testing.T) {
	var out, errb strings.Builder
	if code := run([]string{"-P", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "is rpc.statd running") {
		t.Fatalf("exit %d: %q", code, errb.String())
	}
}
