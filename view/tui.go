package view

import (
	"fmt"
	"slices"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
)

// TUI is the terminal view, a bubbletea model: a dense grid of nodes
// coloured by a figure, a status line, an optional detail pane of the
// selected node and the keys on screen.
type TUI struct {
	src      Source
	interval time.Duration

	snap    Snapshot
	err     error
	visible []Node // filtered and sorted, as drawn

	Figure  Figure
	Order   Order
	Query   string // the filter in force
	editing bool   // typing a filter after '/'
	input   string
	sel     int // selected node number, -1 for none
	detail  *Detail
	detErr  error
	hist    *History // the detail's node's history; nil when none
	histErr error
	show    bool // detail pane open

	width, height int
}

// NewTUI returns the terminal view of src, refreshed every interval.
func NewTUI(src Source, interval time.Duration, fig Figure) *TUI {
	return &TUI{src: src, interval: interval, Figure: fig, sel: -1, width: 80, height: 24}
}

type snapMsg struct {
	snap Snapshot
	err  error
}

type detailMsg struct {
	d       Detail
	err     error
	hist    *History
	histErr error
}

type tickMsg struct{}

func (m *TUI) fetch() tea.Msg {
	s, err := m.src.Snapshot()
	return snapMsg{s, err}
}

func (m *TUI) fetchDetail(node int) tea.Cmd {
	return func() tea.Msg {
		d, err := m.src.Detail(node)
		msg := detailMsg{d: d, err: err, histErr: ErrNoHistory}
		if hs, ok := m.src.(HistorySource); ok && err == nil {
			h, err := hs.History(node, time.Now())
			msg.histErr = err
			if err == nil {
				msg.hist = &h
			}
		}
		return msg
	}
}

// Init implements tea.Model.
func (m *TUI) Init() tea.Cmd { return m.fetch }

// Update implements tea.Model.
func (m *TUI) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case snapMsg:
		m.snap, m.err = msg.snap, msg.err
		m.relayout()
		cmds := []tea.Cmd{tea.Tick(m.interval, func(time.Time) tea.Msg { return tickMsg{} })}
		if m.show && m.sel >= 0 {
			cmds = append(cmds, m.fetchDetail(m.sel))
		}
		return m, tea.Batch(cmds...)
	case tickMsg:
		return m, m.fetch
	case detailMsg:
		if msg.err != nil {
			m.detail, m.detErr = nil, msg.err
		} else if msg.d.Node.Node == m.sel {
			m.detail, m.detErr = &msg.d, nil
			m.hist, m.histErr = msg.hist, msg.histErr
		}
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

// relayout filters and sorts the snapshot into what the grid shows.
func (m *TUI) relayout() {
	m.visible = Filter(slices.Clone(m.snap.Nodes), m.Query)
	Sort(m.visible, m.Order, m.Figure)
	if m.sel < 0 && len(m.visible) > 0 {
		m.sel = m.visible[0].Node
	}
}

func (m *TUI) cursor() int {
	for i := range m.visible {
		if m.visible[i].Node == m.sel {
			return i
		}
	}
	return -1
}

func (m *TUI) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if m.editing {
		switch k.Type {
		case tea.KeyEnter:
			m.Query, m.editing = m.input, false
			m.relayout()
		case tea.KeyEsc:
			m.editing = false
		case tea.KeyBackspace:
			if r := []rune(m.input); len(r) > 0 {
				m.input = string(r[:len(r)-1])
			}
		case tea.KeyRunes, tea.KeySpace:
			m.input += string(k.Runes)
		case tea.KeyCtrlC:
			return m, tea.Quit
		}
		return m, nil
	}
	cols := m.cols()
	move := func(d int) tea.Cmd {
		if len(m.visible) == 0 {
			return nil
		}
		i := max(m.cursor(), 0) + d
		i = min(max(i, 0), len(m.visible)-1)
		m.sel = m.visible[i].Node
		if m.show {
			m.detail = nil
			return m.fetchDetail(m.sel)
		}
		return nil
	}
	switch k.String() {
	case "q", "ctrl+c":
		return m, tea.Quit
	case "c", "m", "l", "n":
		m.Figure = Figures[strings.Index("cmln", k.String())]
		m.relayout()
	case "f", "tab":
		m.Figure = Figures[(int(m.Figure)+1)%len(Figures)]
		m.relayout()
	case "s":
		m.Order = Orders[(int(m.Order)+1)%len(Orders)]
		m.relayout()
	case "/":
		m.editing, m.input = true, m.Query
	case "esc":
		if m.show {
			m.show = false
		} else {
			m.Query = ""
			m.relayout()
		}
	case "left":
		return m, move(-1)
	case "right":
		return m, move(1)
	case "up":
		return m, move(-cols)
	case "down":
		return m, move(cols)
	case "pgup":
		return m, move(-cols * max(m.height-4, 1))
	case "pgdown":
		return m, move(cols * max(m.height-4, 1))
	case "enter", " ":
		m.show = !m.show
		if m.show && m.sel >= 0 {
			m.detail = nil
			return m, m.fetchDetail(m.sel)
		}
	}
	return m, nil
}

// cellWidth is one grid cell: a node number of up to 4 digits and a
// 2-letter mark ("DN" down, " ?" late).
const cellWidth = 7

// detailWidth is the width of the detail pane beside the grid.
const detailWidth = 44

func (m *TUI) gridWidth() int {
	w := m.width
	if m.show && m.width >= 2*detailWidth {
		w -= detailWidth + 1
	}
	return max(w, cellWidth)
}

func (m *TUI) cols() int { return max(m.gridWidth()/cellWidth, 1) }

var (
	styleTitle = lipgloss.NewStyle().Bold(true).Reverse(true)
	styleDown  = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("#ffffff")).Background(lipgloss.Color("#c00000"))
	styleLate  = lipgloss.NewStyle().Foreground(lipgloss.Color("#000000")).Background(lipgloss.Color("#8a8a8a"))
	styleBad   = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("#ff4040"))
	styleKeys  = lipgloss.NewStyle().Faint(true)
	styleBox   = lipgloss.NewStyle().Border(lipgloss.NormalBorder()).Padding(0, 1)
)

func levelStyle(v float64) lipgloss.Style {
	r, g, b := RGB(v)
	return lipgloss.NewStyle().Foreground(lipgloss.Color("#000000")).Background(lipgloss.Color(fmt.Sprintf("#%02x%02x%02x", r, g, b)))
}

func levelBar(v float64) lipgloss.Style {
	r, g, b := RGB(v)
	return lipgloss.NewStyle().Foreground(lipgloss.Color(fmt.Sprintf("#%02x%02x%02x", r, g, b)))
}

// View implements tea.Model.
func (m *TUI) View() string {
	var b strings.Builder
	up, late, down := Counts(m.snap.Nodes)
	head := fmt.Sprintf(" beostatus  colour: %s  sort: %s  filter: %q  %d nodes: %d up, %d late, %d down ",
		strings.ToUpper(m.Figure.String()), m.Order, m.Query, len(m.snap.Nodes), up, late, down)
	b.WriteString(styleTitle.Render(head))
	b.WriteByte('\n')
	status := ""
	switch {
	case m.err != nil:
		status = styleBad.Render("cannot read the table: " + m.err.Error())
	case !m.snap.WriterAlive && !m.snap.Time.IsZero():
		status = styleBad.Render("recvstats does not have the table open: figures are frozen")
	case down > 0:
		var ns []string
		for i := range m.snap.Nodes {
			if m.snap.Nodes[i].State == Down && len(ns) < 20 {
				ns = append(ns, fmt.Sprint(m.snap.Nodes[i].Node))
			}
		}
		status = styleBad.Render("DOWN: " + strings.Join(ns, " "))
	default:
		status = "all nodes up"
	}
	if m.editing {
		status = "filter (up, late, down, N, N-M, address text; enter applies, esc cancels): " + m.input + "█"
	}
	b.WriteString(status)
	b.WriteByte('\n')

	keys := styleKeys.Render("c m l n colour · f next · s sort · / filter · arrows move · enter detail · esc back · q quit")
	gridRows := max(m.height-3, 1)
	pane := ""
	if m.show {
		pane = m.detailPane()
		if m.width < 2*detailWidth {
			gridRows = max(gridRows-lipgloss.Height(pane), 1)
		}
	}
	grid := m.grid(gridRows)
	switch {
	case pane == "":
		b.WriteString(grid)
	case m.width >= 2*detailWidth:
		b.WriteString(lipgloss.JoinHorizontal(lipgloss.Top, lipgloss.NewStyle().Width(m.gridWidth()).Render(grid), " ", pane))
	default:
		b.WriteString(lipgloss.JoinVertical(lipgloss.Left, grid, pane))
	}
	b.WriteByte('\n')
	b.WriteString(keys)
	return b.String()
}

// grid draws the visible nodes in at most rows lines, scrolled so the
// selected node shows.
func (m *TUI) grid(rows int) string {
	if len(m.visible) == 0 {
		if len(m.snap.Nodes) == 0 {
			return "no nodes in the table yet"
		}
		return "no node matches the filter"
	}
	cols := m.cols()
	first := 0
	if c := m.cursor(); c >= 0 && c/cols >= rows {
		first = (c/cols - rows + 1) * cols
	}
	var b strings.Builder
	for i := first; i < len(m.visible) && i < first+rows*cols; i++ {
		if i > first && (i-first)%cols == 0 {
			b.WriteByte('\n')
		}
		n := &m.visible[i]
		var st lipgloss.Style
		mark := "  "
		switch n.State {
		case Down:
			st, mark = styleDown, "DN"
		case Late:
			st, mark = styleLate, " ?"
		default:
			st = levelStyle(n.Level(m.Figure))
		}
		label := fmt.Sprintf("%4d%s", n.Node, mark)
		if n.Node == m.sel {
			st = st.Bold(true).Underline(true)
			if label[0] == ' ' {
				label = ">" + label[1:]
			}
		}
		b.WriteString(st.Render(label))
		b.WriteByte(' ')
	}
	return b.String()
}

func (m *TUI) detailPane() string {
	var b strings.Builder
	if m.detErr != nil {
		fmt.Fprintf(&b, "node %d: %v", m.sel, m.detErr)
		return styleBox.Width(detailWidth - 2).Render(b.String())
	}
	d := m.detail
	if d == nil {
		return styleBox.Width(detailWidth - 2).Render(fmt.Sprintf("node %d: reading…", m.sel))
	}
	n := &d.Node
	state := strings.ToUpper(n.State.String())
	if n.State == Down {
		state = styleBad.Render(state)
	}
	fmt.Fprintf(&b, "node %d  %s  %s\nheard %.1fs ago, %d CPUs\n", n.Node, state, n.Addr, n.AgeSeconds, n.CPUs)
	barW := detailWidth - 18
	for _, c := range d.PerCPU {
		fill := int(c.Percent/100*float64(barW) + 0.5)
		fill = min(max(fill, 0), barW)
		fmt.Fprintf(&b, "cpu%-3d %s%s %3.0f%%\n", c.CPU, levelBar(c.Percent/100).Render(strings.Repeat("█", fill)),
			strings.Repeat("·", barW-fill), c.Percent)
	}
	fmt.Fprintf(&b, "mem  %s of %s used (%s)\n", Bytes(float64(n.MemUsed)), Bytes(float64(n.MemTotal)), n.Value(FigMem))
	fmt.Fprintf(&b, "swap %s of %s used\n", Bytes(float64(n.SwapTotal-min(n.SwapFree, n.SwapTotal))), Bytes(float64(n.SwapTotal)))
	fmt.Fprintf(&b, "load %.2f %.2f %.2f, %d of %d running\n", n.Load1, n.Load5, n.Load15, n.ProcsRunning, n.ProcsTotal)
	for _, x := range d.Net {
		fmt.Fprintf(&b, "%-8.8s in %6s/s out %6s/s\n", x.Name, Bytes(x.RxBytesPerSec), Bytes(x.TxBytesPerSec))
	}
	m.sparklines(&b)
	return styleBox.Width(detailWidth - 2).Render(b.String())
}

// sparkWidth is the cells of a sparkline in the detail pane.
const sparkWidth = 26

// sparklines draws the node's history: the last 15 minutes of every
// figure, the last day of CPU and memory.
func (m *TUI) sparklines(b *strings.Builder) {
	h := m.hist
	if h == nil {
		msg := "history: none"
		if m.histErr != nil {
			msg = "history: " + m.histErr.Error()
		}
		b.WriteString(styleKeys.Render(msg))
		return
	}
	cpus := 1
	if m.detail != nil {
		cpus = max(m.detail.CPUs, 1)
	}
	line := func(s *Series, name string, value func(int) float64, hi float64, show func(float64) string) {
		now := "-"
		if k := len(s.Time) - 1; k >= 0 && !s.EndsDown() {
			now = show(value(k))
		}
		fmt.Fprintf(b, "%-4s %s %7s\n", name, Sparkline(s, value, hi, sparkWidth), now)
	}
	pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v) }
	rate := func(v float64) string { return Bytes(v) + "/s" }
	mem := func(s *Series) func(int) float64 { return func(i int) float64 { return float64(s.Mem[i]) } }
	memHi := func(s *Series) float64 {
		if h.MemTotal > 0 {
			return float64(h.MemTotal)
		}
		return Peak(len(s.Mem), mem(s), 1)
	}
	for _, s := range []*Series{&h.Fine, &h.Minutes} {
		title := "last 15 min"
		if s == &h.Minutes {
			title = "last 24 h, per minute"
		}
		b.WriteString(styleKeys.Render(fmt.Sprintf("%s, %d points", title, len(s.Time))) + "\n")
		line(s, "cpu", func(i int) float64 { return s.CPU[i] }, 100, pct)
		line(s, "mem", mem(s), memHi(s), func(v float64) string { return Bytes(v) })
		if s == &h.Minutes {
			continue
		}
		load := func(i int) float64 { return s.Load1[i] }
		line(s, "load", load, Peak(len(s.Load1), load, float64(cpus)), func(v float64) string { return fmt.Sprintf("%.2f", v) })
		rx, tx := func(i int) float64 { return s.Rx[i] }, func(i int) float64 { return s.Tx[i] }
		hi := max(Peak(len(s.Rx), rx, 1024), Peak(len(s.Tx), tx, 1024))
		line(s, "in", rx, hi, rate)
		line(s, "out", tx, hi, rate)
	}
	b.WriteString(styleKeys.Render("· down or not heard from"))
}
