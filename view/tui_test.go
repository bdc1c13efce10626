package view

import (
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/hoststat/hoststat/view/viewtest"
)

// drive runs cmd and feeds what it returns back into m, as bubbletea's
// loop would (a batch runs each of its commands; ticks are not waited for).
func drive(m *TUI, cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	switch msg := cmd().(type) {
	case tea.BatchMsg:
		for _, c := range msg {
			drive(m, c)
		}
	case tickMsg, nil:
	default:
		_, next := m.Update(msg)
		drive(m, next)
	}
}

func press(m *TUI, keys ...string) {
	for _, k := range keys {
		var msg tea.KeyMsg
		switch k {
		case "enter":
			msg = tea.KeyMsg{Type: tea.KeyEnter}
		case "esc":
			msg = tea.KeyMsg{Type: tea.KeyEsc}
		case "right":
			msg = tea.KeyMsg{Type: tea.KeyRight}
		case "down":
			msg = tea.KeyMsg{Type: tea.KeyDown}
		default:
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
		}
		_, cmd := m.Update(msg)
		drive(m, cmd)
	}
}

func TestTUIKeys(t *testing.T) {
	tb, src := openLab(t, 12, 2*time.Second)
	m := NewTUI(src, time.Second, FigCPU)
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 30})
	drive(m, m.Init())
	v := m.View()
	for _, want := range []string{"colour: CPU", "sort: node", "12 nodes: 12 up, 0 late, 0 down", "  11", "q quit"} {
		if !strings.Contains(v, want) {
			t.Errorf("first view lacks %q:\n%s", want, v)
		}
	}

	press(m, "m")
	if m.Figure != FigMem || !strings.Contains(m.View(), "colour: MEM") {
		t.Errorf("after m: figure %v", m.Figure)
	}
	press(m, "s") // by figure: memory use is 13·node mod 100 percent
	if m.Order != ByFigure || m.visible[0].Node != 7 || m.visible[1].Node != 6 {
		t.Errorf("after s: order %v, first %v", m.Order, nodeNumbers(m.visible[:3]))
	}
	press(m, "s", "s")
	if m.Order != ByNode || m.visible[0].Node != 0 {
		t.Errorf("after s s: order %v", m.Order)
	}

	press(m, "/", "1", "-", "3", "enter")
	if m.Query != "1-3" || len(m.visible) != 3 || !strings.Contains(m.View(), `filter: "1-3"`) {
		t.Errorf("filter 1-3: query %q, visible %v", m.Query, nodeNumbers(m.visible))
	}
	press(m, "esc")
	if m.Query != "" || len(m.visible) != 12 {
		t.Errorf("esc: query %q, %d visible", m.Query, len(m.visible))
	}

	// Select node 1 and open its detail: per-CPU bars, and no invented history.
	if err := tb.Refresh(); err != nil {
		t.Fatal(err)
	}
	press(m, "right", "enter")
	if m.sel != 1 || !m.show || m.detail == nil || m.detail.Node.Node != 1 {
		t.Fatalf("detail: sel %d show %v detail %v", m.sel, m.show, m.detail)
	}
	v = m.View()
	for _, want := range []string{"node 1  UP", "cpu0", "cpu1", "13%", "history: node 1: no history"} {
		if !strings.Contains(v, want) {
			t.Errorf("detail pane lacks %q:\n%s", want, v)
		}
	}

	// With history: node 1 idle until 8 minutes ago, then 90 % busy.
	end := time.Now()
	tb.KeepHistory(t, time.Hour, time.Second, func(node int, at time.Time) (int, bool) {
		if node == 1 && end.Sub(at) < 8*time.Minute {
			return 90, true
		}
		return 0, true
	})
	tb.Busy = func(node, round int) int {
		if node == 1 {
			return 90
		}
		return viewtest.DefaultBusy(node, round)
	}
	if err := tb.Step(); err != nil {
		t.Fatal(err)
	}
	press(m, "esc", "enter")
	v = m.View()
	spark := sparkline(t, v, "cpu ", 0)
	if r := []rune(spark); r[0] != '▁' || r[len(r)-1] != '▇' || !slices.IsSorted(r) {
		t.Errorf("cpu sparkline of the last 15 min %q: want idle (▁) rising to 90 %% (▇)\n%s", spark, v)
	}
	// Of the day, only the last hour has points: the last two cells of 55 min.
	if day := []rune(sparkline(t, v, "cpu ", 1)); len(day) != 2 || day[0] != '▁' || day[1] <= '▁' {
		t.Errorf("cpu sparkline of the day %q", string(day))
	}
	for _, want := range []string{"last 15 min", "last 24 h, per minute", "90%"} {
		if !strings.Contains(v, want) {
			t.Errorf("detail pane lacks %q:\n%s", want, v)
		}
	}
	press(m, "esc")
	if m.show {
		t.Error("esc left the detail open")
	}

	// Node 5 falls silent: after the down-after time it is marked down.
	tb.Stop(5)
	stop := make(chan struct{})
	done := tb.Run(t, 100*time.Millisecond, stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		drive(m, m.fetch)
		if strings.Contains(m.View(), "DOWN: 5") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 5 not shown down:\n%s", m.View())
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	<-done
	if v := m.View(); !strings.Contains(v, "   5DN") || !strings.Contains(v, "12 nodes: ") || !strings.Contains(v, " late, 1 down") {
		t.Errorf("down node not marked in the grid:\n%s", v)
	}

	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	if cmd == nil || cmd() != (tea.QuitMsg{}) {
		t.Error("q does not quit")
	}
}

// sparkline is the cells of the nth sparkline of a figure in the detail
// pane of view v (the cells between the name and the value).
func sparkline(t *testing.T, v, name string, nth int) string {
	t.Helper()
	for _, line := range strings.Split(v, "\n") {
		_, rest, ok := strings.Cut(line, "│ "+name+" ")
		if !ok {
			continue
		}
		if nth--; nth < 0 {
			return strings.Trim(string([]rune(rest)[:sparkWidth]), " ")
		}
	}
	t.Fatalf("no %q sparkline in\n%s", name, v)
	return ""
}

// TestFrozenWhenRecvstatsGone: once recvstats closes the table, both
// views say the figures are frozen.
func TestFrozenWhenRecvstatsGone(t *testing.T) {
	tb, src := openLab(t, 2, time.Minute)
	if err := tb.W.Close(); err != nil {
		t.Fatal(err)
	}
	m := NewTUI(src, time.Second, FigCPU)
	drive(m, m.Init())
	if v := m.View(); !strings.Contains(v, "recvstats does not have the table open: figures are frozen") {
		t.Errorf("terminal view:\n%s", v)
	}
	hs := startServer(t, src, time.Second)
	if _, body, _ := get(t, hs.URL+"/api/nodes"); !strings.Contains(string(body), `"writer_alive":false`) {
		t.Errorf("/api/nodes: %s", body)
	}
}
