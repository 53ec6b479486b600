package sqlincremental

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Dialects of source databases (Config.Dialect).
const (
	DialectPostgres = "postgres"
	// DialectMySQL covers MySQL and MariaDB.
	DialectMySQL = "mysql"
)

// namedQuery is a query whose :name parameters were rewritten to the dialect's placeholders.
type namedQuery struct {
	// SQL is the rewritten query, without a trailing semicolon.
	SQL string
	// Names holds the parameter names in binding order. Postgres numbers them ($1..$n), so a
	// name used several times is bound once; MySQL's ? placeholders are positional, so Names
	// has one entry per occurrence.
	Names []string
	// Uses lists every occurrence of a parameter with the comparison operator before it ("" when
	// none), so a comparison that skips rows can be refused.
	Uses []paramUse
}

// paramUse is one occurrence of a named parameter.
type paramUse struct {
	Name string
	// Op is the comparison operator just before the parameter (">", ">=", "<", …), or "".
	Op string
}

// parseNamed rewrites the :name parameters of one SQL statement. It knows enough of the
// dialect's lexical rules to leave alone what only looks like a parameter: string constants,
// quoted identifiers, comments and (postgres) :: casts and dollar quoting. A name starts with a
// letter or underscore and continues with letters, digits and underscores.
//
// The dialect's own positional parameters ($1, ?) are refused (they would collide with the
// rewritten ones), and so is a second statement; a trailing semicolon is dropped so the query
// can be wrapped as a subquery. Errors are not yet marked.
func parseNamed(query, dialect string) (namedQuery, error) {
	mysql := dialect == DialectMySQL
	var (
		b       strings.Builder
		nq      namedQuery
		numbers = make(map[string]int)
		ended   bool // a top-level ';' was seen
	)
	q := query
	b.Grow(len(q))
	isComment := func(i int) bool {
		if strings.HasPrefix(q[i:], "/*") || (mysql && q[i] == '#') {
			return true
		}
		return strings.HasPrefix(q[i:], "--") && (!mysql || i+2 >= len(q) || isSpace(q[i+2]))
	}
	for i := 0; i < len(q); {
		c := q[i]
		if ended && !isSpace(c) && !isComment(i) {
			return namedQuery{}, errors.New("query: want a single statement, found text after ';'")
		}
		switch {
		case c == '\'' || (mysql && c == '"'):
			j, err := skipQuoted(q, i, c, mysql)
			if err != nil {
				return namedQuery{}, err
			}
			b.WriteString(q[i:j])
			i = j
		case c == '"' || (mysql && c == '`'):
			j, err := skipQuoted(q, i, c, false)
			if err != nil {
				return namedQuery{}, err
			}
			b.WriteString(q[i:j])
			i = j
		case isComment(i) && c != '/':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				j = len(q) - i
			}
			b.WriteString(q[i : i+j])
			i += j
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			j, err := skipBlockComment(q, i, !mysql)
			if err != nil {
				return namedQuery{}, err
			}
			b.WriteString(q[i:j])
			i = j
		case c == '$' && !mysql:
			if i+1 < len(q) && isDigit(q[i+1]) {
				return namedQuery{}, fmt.Errorf("query: positional parameter at offset %d: use :name parameters", i)
			}
			j, err := skipDollarQuoted(q, i)
			if err != nil {
				return namedQuery{}, err
			}
			b.WriteString(q[i:j])
			i = j
		case c == '?' && mysql:
			return namedQuery{}, fmt.Errorf("query: positional parameter at offset %d: use :name parameters", i)
		case c == ':':
			if i+1 < len(q) && q[i+1] == ':' && !mysql { // a cast: the type name follows
				b.WriteString("::")
				i += 2
				continue
			}
			if i+1 < len(q) && isNameStart(q[i+1]) {
				j := i + 2
				for j < len(q) && isNameChar(q[j]) {
					j++
				}
				name := q[i+1 : j]
				nq.Uses = append(nq.Uses, paramUse{Name: name, Op: trailingOperator(b.String())})
				if mysql {
					nq.Names = append(nq.Names, name)
					b.WriteByte('?')
				} else {
					n, ok := numbers[name]
					if !ok {
						nq.Names = append(nq.Names, name)
						n = len(nq.Names)
						numbers[name] = n
					}
					b.WriteString("$" + strconv.Itoa(n))
				}
				i = j
				continue
			}
			b.WriteByte(c)
			i++
		case c == ';':
			ended = true
			i++
		case isWordStart(c):
			j := i + 1
			for j < len(q) && isWordChar(q[j]) {
				j++
			}
			b.WriteString(q[i:j])
			if !mysql && j-i == 1 && (c == 'E' || c == 'e') && j < len(q) && q[j] == '\'' {
				k, err := skipQuoted(q, j, '\'', true)
				if err != nil {
					return namedQuery{}, err
				}
				b.WriteString(q[j:k])
				j = k
			}
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	nq.SQL = strings.TrimSpace(b.String())
	if nq.SQL == "" {
		return namedQuery{}, errors.New("query: empty")
	}
	return nq, nil
}

// trailingOperator returns the comparison operator that ends s, ignoring white space.
func trailingOperator(s string) string {
	s = strings.TrimRight(s, " \t\r\n\f\v")
	i := len(s)
	for i > 0 && strings.IndexByte("<>=!", s[i-1]) >= 0 {
		i--
	}
	return s[i:]
}

// skipQuoted returns the offset just past the quoted text starting at q[i] == quote.
// A doubled quote stands for itself; with backslashes, a backslash escapes the next
// byte.
func skipQuoted(q string, i int, quote byte, backslashes bool) (int, error) {
	for j := i + 1; j < len(q); j++ {
		switch q[j] {
		case '\\':
			if backslashes {
				j++
			}
		case quote:
			if j+1 < len(q) && q[j+1] == quote {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	what := "string constant"
	if quote == '`' || quote == '"' && !backslashes {
		what = "quoted identifier"
	}
	return 0, fmt.Errorf("query: unterminated %s at offset %d", what, i)
}

// skipBlockComment returns the offset just past the comment starting at q[i:i+2] ==
// "/*". Postgres block comments nest; MySQL's do not.
func skipBlockComment(q string, i int, nest bool) (int, error) {
	depth := 0
	for j := i; j+1 < len(q); {
		switch q[j : j+2] {
		case "/*":
			if depth == 0 || nest {
				depth++
			}
			j += 2
		case "*/":
			depth--
			j += 2
			if depth == 0 {
				return j, nil
			}
		default:
			j++
		}
	}
	return 0, fmt.Errorf("query: unterminated comment at offset %d", i)
}

// skipDollarQuoted returns the offset past a dollar-quoted string starting at q[i] ==
// '$', or i+1 when the '$' does not open one.
func skipDollarQuoted(q string, i int) (int, error) {
	j := i + 1
	if j < len(q) && isNameStart(q[j]) {
		for j < len(q) && isNameChar(q[j]) {
			j++
		}
	}
	if j >= len(q) || q[j] != '$' {
		return i + 1, nil
	}
	tag := q[i : j+1]
	end := strings.Index(q[j+1:], tag)
	if end < 0 {
		return 0, fmt.Errorf("query: unterminated dollar-quoted string %s at offset %d", tag, i)
	}
	return j + 1 + end + len(tag), nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isNameStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}
func isNameChar(c byte) bool { return isNameStart(c) || isDigit(c) }

// isWordStart and isWordChar follow Postgres identifiers and keywords, which may hold
// non-ASCII letters and, after the first character, '$'.
func isWordStart(c byte) bool { return isNameStart(c) || c >= 0x80 }
func isWordChar(c byte) bool  { return isWordStart(c) || isDigit(c) || c == '$' }
