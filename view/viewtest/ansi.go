package viewtest

import (
	"fmt"
	"html"
	"strconv"
	"strings"
)

// ANSIToHTML turns a terminal capture (tmux capture-pane -e: SGR colour,
// bold, faint, underline and reverse codes) into a page that shows it as
// the terminal did, so a browser can take its picture.
func ANSIToHTML(capture string) string {
	var b strings.Builder
	b.WriteString(`<!doctype html><meta charset="utf-8"><style>body{margin:0;background:#101010}` +
		`pre{margin:0;padding:8px;font:14px/1.25 "DejaVu Sans Mono",monospace;color:#d0d0d0;background:#101010}</style><pre>`)
	var st sgr
	open := false
	flush := func() {
		if open {
			b.WriteString("</span>")
		}
		b.WriteString("<span style=\"" + st.css() + "\">")
		open = true
	}
	flush()
	for i := 0; i < len(capture); {
		if capture[i] == 0x1b && i+1 < len(capture) && capture[i+1] == '[' {
			j := i + 2
			for j < len(capture) && (capture[j] < 0x40 || capture[j] > 0x7e) {
				j++
			}
			if j < len(capture) && capture[j] == 'm' {
				st.apply(capture[i+2 : j])
				flush()
			}
			i = j + 1
			continue
		}
		j := strings.IndexByte(capture[i:], 0x1b)
		if j < 0 {
			j = len(capture) - i
		}
		b.WriteString(html.EscapeString(capture[i : i+j]))
		i += j
	}
	b.WriteString("</span></pre>")
	return b.String()
}

type sgr struct {
	fg, bg                      string
	bold, faint, under, reverse bool
}

func (s *sgr) apply(params string) {
	ps := strings.Split(params, ";")
	for i := 0; i < len(ps); i++ {
		n, _ := strconv.Atoi(ps[i])
		switch {
		case n == 0:
			*s = sgr{}
		case n == 1:
			s.bold = true
		case n == 2:
			s.faint = true
		case n == 4:
			s.under = true
		case n == 7:
			s.reverse = true
		case n == 22:
			s.bold, s.faint = false, false
		case n == 24:
			s.under = false
		case n == 27:
			s.reverse = false
		case n >= 30 && n <= 37, n >= 90 && n <= 97:
			s.fg = xterm(basic(n%10, n >= 90))
		case n >= 40 && n <= 47, n >= 100 && n <= 107:
			s.bg = xterm(basic(n%10, n >= 100))
		case n == 39:
			s.fg = ""
		case n == 49:
			s.bg = ""
		case (n == 38 || n == 48) && i+1 < len(ps):
			var c string
			if ps[i+1] == "5" && i+2 < len(ps) {
				k, _ := strconv.Atoi(ps[i+2])
				c, i = xterm(k), i+2
			} else if ps[i+1] == "2" && i+4 < len(ps) {
				r, _ := strconv.Atoi(ps[i+2])
				g, _ := strconv.Atoi(ps[i+3])
				bl, _ := strconv.Atoi(ps[i+4])
				c, i = fmt.Sprintf("rgb(%d,%d,%d)", r, g, bl), i+4
			}
			if n == 38 {
				s.fg = c
			} else {
				s.bg = c
			}
		}
	}
}

func basic(n int, bright bool) int {
	if bright {
		return n + 8
	}
	return n
}

// xterm is colour k of the 256-colour palette.
func xterm(k int) string {
	base := []string{"#000000", "#cd0000", "#00cd00", "#cdcd00", "#0000ee", "#cd00cd", "#00cdcd", "#e5e5e5",
		"#7f7f7f", "#ff0000", "#00ff00", "#ffff00", "#5c5cff", "#ff00ff", "#00ffff", "#ffffff"}
	switch {
	case k < 16:
		return base[max(k, 0)]
	case k < 232:
		k -= 16
		lv := func(v int) int {
			if v == 0 {
				return 0
			}
			return 55 + 40*v
		}
		return fmt.Sprintf("rgb(%d,%d,%d)", lv(k/36), lv(k/6%6), lv(k%6))
	case k < 256:
		g := 8 + 10*(k-232)
		return fmt.Sprintf("rgb(%d,%d,%d)", g, g, g)
	}
	return ""
}

func (s sgr) css() string {
	fg, bg := s.fg, s.bg
	if fg == "" {
		fg = "#d0d0d0"
	}
	if bg == "" {
		bg = "#101010"
	}
	if s.reverse {
		fg, bg = bg, fg
	}
	out := "color:" + fg + ";background:" + bg
	if s.bold {
		out += ";font-weight:bold"
	}
	if s.faint {
		out += ";opacity:.6"
	}
	if s.under {
		out += ";text-decoration:underline"
	}
	return out
}
