package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/view/viewtest"
)

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--help"}, 0, "Usage: beostatus"},
		{[]string{"-v"}, 0, "beostatus (hoststat)"},
		{[]string{"--figure", "disk"}, 2, `unknown figure "disk"`},
		{[]string{"--http", "0.0.0.0:8040"}, 2, "not a loopback address; give --http-public"},
		{[]string{"--interval", "0s"}, 2, "must be positive"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--shm-dir", dir}, 1, "no node table at " + filepath.Join(dir, "beostat")},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), c.args, &out, &errb)
		if code != c.code || !strings.Contains(out.String()+errb.String(), c.out) {
			t.Errorf("%q: exit %d, want %d; output %q, want %q", c.args, code, c.code, out.String()+errb.String(), c.out)
		}
	}
}

// tmuxTerm drives beostatus in a detached tmux session of its own server.
type tmuxTerm struct {
	t    *testing.T
	tmux string
	sock string
}

func (m *tmuxTerm) do(args ...string) string {
	m.t.Helper()
	out, err := exec.Command(m.tmux, append([]string{"-S", m.sock}, args...)...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (m *tmuxTerm) screen() string { return m.do("capture-pane", "-p", "-t", "bs") }

func (m *tmuxTerm) waitFor(what string, want ...string) {
	m.t.Helper()
	netlab.WaitFor(m.t, 15*time.Second, what, func() error {
		s := m.screen()
		for _, w := range want {
			if !strings.Contains(s, w) {
				return fmt.Errorf("screen lacks %q:\n%s", w, s)
			}
		}
		return nil
	})
}

// TestTerminalUnderTmux runs the real beostatus in a real terminal (tmux)
// against a table written by the real shm writer: it shows the grid,
// follows keys, and marks a node down once it stops reporting.
func TestTerminalUnderTmux(t *testing.T) {
	tmux := netlab.RequireCommand(t, "tmux")
	bin := netlab.BuildCommands(t, "./cmd/beostatus")
	tb := viewtest.New(t, 24, 2*time.Second)
	// Node 3 was idle until 8 minutes ago, and is 95 % busy since.
	end := time.Now()
	tb.KeepHistory(t, 2*time.Hour, time.Second, func(node int, at time.Time) (int, bool) {
		switch {
		case node != 3:
			return viewtest.DefaultBusy(node, 0), true
		case end.Sub(at) < 8*time.Minute:
			return 95, true
		}
		return 0, true
	})
	tb.Busy = func(node, round int) int {
		if node == 3 {
			return 95
		}
		return viewtest.DefaultBusy(node, round)
	}
	stop := make(chan struct{})
	done := tb.Run(t, 200*time.Millisecond, stop)
	t.Cleanup(func() { close(stop); <-done })

	m := &tmuxTerm{t: t, tmux: tmux, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	t.Cleanup(func() { exec.Command(tmux, "-S", m.sock, "kill-server").Run() })
	// Without CI in its environment: termenv (under lipgloss) draws no
	// colour when CI is set, and the test looks at the colours too.
	cmd := fmt.Sprintf("env -u CI %s --shm-dir %s --interval 200ms; echo beostatus exited $?; sleep 30",
		filepath.Join(bin, "beostatus"), tb.Dir)
	m.do("-f", "/dev/null", "new-session", "-d", "-s", "bs", "-x", "132", "-y", "32", "-e", "TERM=xterm-256color", cmd)

	m.waitFor("the grid", "beostatus  colour: CPU", "24 nodes: 24 up, 0 late, 0 down", "  22     23", "q quit")
	m.do("send-keys", "-t", "bs", "m")
	m.waitFor("colour by memory", "colour: MEM")
	m.do("send-keys", "-t", "bs", "s")
	m.waitFor("sort by figure", "sort: figure")
	m.do("send-keys", "-t", "bs", "s")
	m.waitFor("sort by state", "sort: state")
	m.do("send-keys", "-t", "bs", "s")
	m.waitFor("sort by node", "sort: node")

	tb.Stop(7)
	m.waitFor("node 7 down", "DOWN: 7", "   7DN", "23 up, 0 late, 1 down")

	m.do("send-keys", "-t", "bs", "Right")
	m.do("send-keys", "-t", "bs", "Right")
	m.do("send-keys", "-t", "bs", "Right")
	m.do("send-keys", "-t", "bs", "Enter")
	m.waitFor("the detail pane", "node 3  UP", "cpu1", " 95%", "last 15 min", "last 24 h, per minute")
	// The sparkline of the last 15 minutes rises from idle to busy.
	var spark []rune
	for _, line := range strings.Split(m.screen(), "\n") {
		if _, rest, ok := strings.Cut(line, "│ cpu  "); ok {
			spark = []rune(strings.TrimSpace(string([]rune(rest)[:26])))
			break
		}
	}
	if len(spark) < 20 || spark[0] != '▁' || spark[len(spark)-1] != '█' || !slices.IsSorted(spark) {
		t.Errorf("node 3's CPU sparkline %q: want idle (▁) rising to busy (█)\n%s", string(spark), m.screen())
	}
	shot := m.do("capture-pane", "-p", "-e", "-t", "bs")
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "beostatus-terminal.ansi"), []byte(shot), 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(shot, "\x1b[") {
		t.Error("no colour on screen")
	}
	picture(t, shot)

	m.do("send-keys", "-t", "bs", "q")
	m.waitFor("beostatus to quit", "beostatus exited 0")
}

// picture renders a terminal capture in headless Chromium and writes its
// PNG to the test's output directory (and docs/img with
// HOSTSTAT_SCREENSHOTS=1).
func picture(t *testing.T, capture string) {
	page := filepath.Join(t.TempDir(), "terminal.html")
	if err := os.WriteFile(page, []byte(viewtest.ANSIToHTML(capture)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := viewtest.Browser(t, 1140, 600)
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+page)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dirs := []string{t.ArtifactDir()}
	if os.Getenv("HOSTSTAT_SCREENSHOTS") == "1" {
		dirs = append(dirs, filepath.Join("..", "..", "docs", "img"))
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "beostatus-terminal.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
