package nsm

import (
	"fmt"
	"strconv"
)

// NameError says what is wrong with a mon_name or my_name. Its message
// quotes the value (escaped and shortened), so it is safe to log: the
// originals were exploited through names used as paths (CERT CA-96.09) and
// as syslog format strings (CVE-2000-0666).
type NameError struct {
	Field  string // "mon_name" or "my_name"
	Value  string
	Reason string
}

// quoteLimit bounds how much of a hostile value reaches a log line.
const quoteLimit = 64

// Quote renders an untrusted value for a log line or error: escaped ASCII,
// at most 64 bytes of it, with the full length when cut.
func Quote(s string) string {
	if len(s) <= quoteLimit {
		return strconv.QuoteToASCII(s)
	}
	return fmt.Sprintf("%s…(%d bytes)", strconv.QuoteToASCII(s[:quoteLimit]), len(s))
}

func (e *NameError) Error() string {
	return fmt.Sprintf("nsm: %s %s %s", e.Field, Quote(e.Value), e.Reason)
}

// ValidateMonName checks a mon_name: a host name or address literal.
func ValidateMonName(s string) error { return validateName("mon_name", s) }

// ValidateMyName checks a my_name, which is held to the same rules.
func ValidateMyName(s string) error { return validateName("my_name", s) }

// validateName enforces DESIGN.md's rule: non-empty, at most SM_MAXSTRLEN
// bytes, printable ASCII, no '/', no leading '.'. Space is refused as well:
// no host name or address contains one, and it would make log fields
// ambiguous.
func validateName(field, s string) error {
	fail := func(reason string) error { return &NameError{Field: field, Value: s, Reason: reason} }
	switch {
	case s == "":
		return fail("is empty")
	case len(s) > MaxStrLen:
		return fail(fmt.Sprintf("is %d bytes, more than %d", len(s), MaxStrLen))
	case s[0] == '.':
		return fail("starts with '.'")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			return fail(fmt.Sprintf("contains '/' at byte %d", i))
		case c <= ' ' || c >= 0x7f:
			return fail(fmt.Sprintf("contains byte 0x%02x at byte %d, not printable ASCII", c, i))
		}
	}
	return nil
}

// Validate checks both names of a mon_id.
func (m *MonID) Validate() error {
	if err := ValidateMonName(m.MonName); err != nil {
		return err
	}
	return ValidateMyName(m.MyID.Name)
}
