package daemon

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// generateFlag is the hidden option through which the build asks a command
// for the parts of its documentation that come from its flags, so that
// --help, the manual page, the completion and hoststat.conf cannot disagree.
const generateFlag = "generate"

// Generated documents, the values of --generate.
const (
	GenerateOptions = "man-options"     // the OPTIONS section of the manual page, in roff
	GenerateBash    = "bash-completion" // a bash completion function
	GenerateConfig  = "config"          // the command's commented section of hoststat.conf
)

// generate writes the document kind for the command whose flags are fs.
func generate(w io.Writer, fs *pflag.FlagSet, kind string) error {
	switch kind {
	case GenerateOptions:
		writeRoffOptions(w, fs)
	case GenerateBash:
		writeBashCompletion(w, fs)
	case GenerateConfig:
		writeConfigSection(w, fs)
	default:
		return fmt.Errorf("--generate: %q is not one of %s, %s, %s", kind, GenerateOptions, GenerateBash, GenerateConfig)
	}
	return nil
}

// documented lists the flags a user sees, in the order --help shows them.
func documented(fs *pflag.FlagSet) []*pflag.Flag {
	var out []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			out = append(out, f)
		}
	})
	if fs.SortFlags {
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	}
	return out
}

// takesValue reports whether the flag needs an argument.
func takesValue(f *pflag.Flag) bool { return f.NoOptDefVal == "" }

// roff escapes text for a roff body line.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func writeRoffOptions(w io.Writer, fs *pflag.FlagSet) {
	for _, f := range documented(fs) {
		varname, usage := pflag.UnquoteUsage(f)
		fmt.Fprintln(w, ".TP")
		var head strings.Builder
		if f.Shorthand != "" {
			fmt.Fprintf(&head, `\fB\-%s\fR`, f.Shorthand)
			if takesValue(f) && varname != "" {
				fmt.Fprintf(&head, ` \fI%s\fR`, roff(varname))
			}
			head.WriteString(", ")
		}
		fmt.Fprintf(&head, `\fB\-\-%s\fR`, roff(f.Name))
		if takesValue(f) && varname != "" {
			fmt.Fprintf(&head, `=\fI%s\fR`, roff(varname))
		}
		fmt.Fprintln(w, head.String())
		text := usage
		if d := defaultText(f); d != "" {
			text += " (default: " + d + ")"
		}
		fmt.Fprintln(w, roff(text)+".")
	}
}

// defaultText is the default worth printing, or "".
func defaultText(f *pflag.Flag) string {
	switch d := f.DefValue; {
	case d == "" || d == "[]" || d == "false" || d == "0" || d == "0s":
		return ""
	default:
		return d
	}
}

// completionKind says what bash should offer after a flag, from the name
// of its argument in the usage text.
func completionKind(varname string) string {
	switch strings.ToUpper(varname) {
	case "IF":
		return "interface"
	case "DIR":
		return "dir"
	case "FILE", "PROG", "PATH":
		return "file"
	}
	return "none"
}

func writeBashCompletion(w io.Writer, fs *pflag.FlagSet) {
	name := fs.Name()
	fn := "_hoststat_" + strings.NewReplacer(".", "_", "-", "_").Replace(name)
	byKind := map[string][]string{}
	var words []string
	for _, f := range documented(fs) {
		opts := []string{"--" + f.Name}
		if f.Shorthand != "" {
			opts = append(opts, "-"+f.Shorthand)
		}
		words = append(words, opts...)
		if takesValue(f) {
			varname, _ := pflag.UnquoteUsage(f)
			k := completionKind(varname)
			byKind[k] = append(byKind[k], opts...)
		}
	}
	fmt.Fprintf(w, "# bash completion for %s (hoststat), generated from its flags\n", name)
	fmt.Fprintf(w, "%s() {\n\tlocal cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n\tCOMPREPLY=()\n\tcase \"$prev\" in\n", fn)
	for _, k := range []string{"interface", "dir", "file", "none"} {
		if len(byKind[k]) == 0 {
			continue
		}
		fmt.Fprintf(w, "\t%s)\n", strings.Join(byKind[k], "|"))
		switch k {
		case "interface":
			fmt.Fprint(w, "\t\tCOMPREPLY=($(compgen -W \"$(ls /sys/class/net 2>/dev/null)\" -- \"$cur\"))\n")
		case "dir":
			fmt.Fprint(w, "\t\tCOMPREPLY=($(compgen -d -- \"$cur\"))\n")
		case "file":
			fmt.Fprint(w, "\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n")
		}
		fmt.Fprint(w, "\t\treturn ;;\n")
	}
	fmt.Fprintf(w, "\tesac\n\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n}\ncomplete -F %s %s\n", strings.Join(words, " "), fn, name)
}

func writeConfigSection(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "[%s]\n", fs.Name())
	for _, f := range documented(fs) {
		if notFromConfig[f.Name] {
			continue
		}
		varname, usage := pflag.UnquoteUsage(f)
		opt := "--" + f.Name
		if f.Shorthand != "" {
			opt = "-" + f.Shorthand + ", " + opt
		}
		if takesValue(f) && varname != "" {
			opt += "=" + varname
		}
		fmt.Fprintf(w, "# %s: %s\n", opt, usage)
		val := f.DefValue
		if val == "[]" {
			val = ""
		}
		fmt.Fprintln(w, strings.TrimSpace("#"+f.Name+" = "+val))
	}
}
