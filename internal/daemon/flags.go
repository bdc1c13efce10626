package daemon

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// UsageError reports a bad command line of the program name on stderr, in
// one line that says what was wrong, and returns ExitUsage.
func UsageError(stderr io.Writer, name, format string, a ...any) int {
	fmt.Fprintf(stderr, "%s: %s (see '%s --help')\n", name, fmt.Sprintf(format, a...), name)
	return ExitUsage
}

// Flags describes how a command answers its command line besides its own
// flags: the text --help prints above and below the flag list, and how
// many operands it takes.
type Flags struct {
	Head     string // usage line and description, before the flags
	Foot     string // after the flags (may be empty)
	MaxArgs  int    // operands allowed after the flags (0: none)
	ArgsName string // what the operands are, for the error message
}

// ParseFlags parses a command line with fs, whose name is the program's
// and which defines the flags "help" and "version" where the program's
// manual page puts them. It adds --config (the hoststat.conf(5) file whose
// [name] section fills the flags the command line left unset) and the
// hidden --generate (the documents made from the flags). It answers --help
// (usageHead, then the flags) and --version on stdout, and reports a bad
// flag, a stray argument or a bad configuration file on stderr in one
// line. done says the program should exit with code now.
func ParseFlags(fs *pflag.FlagSet, args []string, usageHead string, stdout, stderr io.Writer) (code int, done bool) {
	return Flags{Head: usageHead}.Parse(fs, args, stdout, stderr)
}

// Parse is ParseFlags with f's help text and operand count.
func (f Flags) Parse(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	name := fs.Name()
	config := fs.String("config", DefaultConfigFile, "read defaults from the ["+name+"] section of `FILE` (hoststat.conf(5)); the command line wins")
	gen := fs.String(generateFlag, "", "")
	_ = fs.MarkHidden(generateFlag)
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp { // -h not defined by the program: still help
			f.printHelp(fs, stdout)
			return ExitOK, true
		}
		return UsageError(stderr, name, "%s", oneLine(err.Error())), true
	}
	switch {
	case isTrue(fs, "help"):
		f.printHelp(fs, stdout)
		return ExitOK, true
	case isTrue(fs, "version"):
		fmt.Fprintf(stdout, "%s (hoststat) %s\n", name, Version())
		return ExitOK, true
	case *gen != "":
		if err := generate(stdout, fs, *gen); err != nil {
			return UsageError(stderr, name, "%v", err), true
		}
		return ExitOK, true
	case fs.NArg() > f.MaxArgs:
		extra := fs.Arg(f.MaxArgs)
		if f.MaxArgs == 0 {
			return UsageError(stderr, name, "unexpected argument %q: %s takes no arguments", extra, name), true
		}
		return UsageError(stderr, name, "unexpected argument %q after %s", extra, f.ArgsName), true
	}
	if err := ApplyConfig(fs, *config, name, fs.Changed("config")); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return ExitUsage, true
	}
	return ExitOK, false
}

func (f Flags) printHelp(fs *pflag.FlagSet, w io.Writer) {
	fmt.Fprint(w, f.Head, fs.FlagUsages())
	if f.Foot != "" {
		fmt.Fprint(w, "\n", f.Foot)
	}
}

func isTrue(fs *pflag.FlagSet, name string) bool {
	fl := fs.Lookup(name)
	return fl != nil && fl.Value.String() == "true"
}

// oneLine keeps an error message on one line whatever a library put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// IsRoot reports whether the process runs as root; commands that need it
// say so instead of failing later with a less helpful error.
func IsRoot() bool { return os.Geteuid() == 0 }
