package pgtarget

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// copyBuffer is the write buffer between the source and the target's COPY: COPY sends what one
// read returns as one message, so rows are batched rather than sent one by one.
const copyBuffer = 64 << 10

// CopyWriter encodes the rows of a [Stream] as COPY data, binary or text, in the order of
// [Stream.Fields].
type CopyWriter struct {
	w      *bufio.Writer
	binary bool
	// oids are the target types of the columns, for ValueRow.
	oids []uint32
	n    [4]byte
	text []byte
}

// binaryHeader starts COPY BINARY data: the signature, no flags, no header extension.
var binaryHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

func newCopyWriter(w io.Writer, binary bool, oids []uint32) (*CopyWriter, error) {
	c := &CopyWriter{w: bufio.NewWriterSize(w, copyBuffer), binary: binary, oids: oids}
	if binary {
		if _, err := c.w.Write(binaryHeader); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// RawRow writes one row whose values are already in the COPY format's wire form: Postgres
// binary results (binary), or Postgres text output (text, escaped here). nil is NULL.
func (c *CopyWriter) RawRow(vals [][]byte) error {
	if c.binary {
		binary.BigEndian.PutUint16(c.n[:2], uint16(len(vals)))
		c.w.Write(c.n[:2])
		for _, v := range vals {
			if v == nil {
				c.w.Write([]byte{0xff, 0xff, 0xff, 0xff})
				continue
			}
			binary.BigEndian.PutUint32(c.n[:], uint32(len(v)))
			c.w.Write(c.n[:])
			c.w.Write(v)
		}
		_, err := c.w.Write(nil) // bufio keeps the first error of the writes above
		return err
	}
	c.text = c.text[:0]
	for i, v := range vals {
		if i > 0 {
			c.text = append(c.text, '\t')
		}
		if v == nil {
			c.text = append(c.text, `\N`...)
			continue
		}
		c.text = appendEscaped(c.text, v)
	}
	c.text = append(c.text, '\n')
	_, err := c.w.Write(c.text)
	return err
}

// ValueRow writes one row of Go values (from a non-Postgres source) as COPY text, each
// rendered for its target column's type.
func (c *CopyWriter) ValueRow(vals []any) error {
	c.text = c.text[:0]
	for i, v := range vals {
		if i > 0 {
			c.text = append(c.text, '\t')
		}
		var err error
		if c.text, err = appendValue(c.text, v, c.oids[i]); err != nil {
			return fmt.Errorf("column %d: %w", i+1, err)
		}
	}
	c.text = append(c.text, '\n')
	_, err := c.w.Write(c.text)
	return err
}

// close ends the data (the binary trailer) and flushes.
func (c *CopyWriter) close() error {
	if c.binary {
		c.w.Write([]byte{0xff, 0xff})
	}
	return c.w.Flush()
}

// appendEscaped appends v escaped for COPY text format.
func appendEscaped(b, v []byte) []byte {
	for _, ch := range v {
		switch ch {
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, ch)
		}
	}
	return b
}

// appendTyped appends a value for column c as COPY text: JSON for json columns, an array
// literal for array columns, else as appendValue.
func appendTyped(b []byte, v any, c column) ([]byte, error) {
	switch {
	case v == nil:
		return append(b, `\N`...), nil
	case c.oid == pgtype.JSONOID || c.oid == pgtype.JSONBOID:
		raw, ok := v.(json.RawMessage)
		if !ok {
			var err error
			if raw, err = json.Marshal(v); err != nil {
				return nil, fmt.Errorf("encode as JSON: %w", err)
			}
		}
		return appendEscaped(b, raw), nil
	case c.array:
		lit, err := arrayLiteral(nil, reflect.ValueOf(v))
		if err != nil {
			return nil, err
		}
		return appendEscaped(b, lit), nil
	}
	return appendValue(b, v, c.oid)
}

// arrayLiteral renders a Go slice as a Postgres array literal, every element quoted (which the
// input of any element type accepts) and NULL for nil.
func arrayLiteral(b []byte, v reflect.Value) ([]byte, error) {
	if v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return append(b, "NULL"...), nil
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Slice && v.Kind() != reflect.Array {
		return nil, fmt.Errorf("%s is not an array", v.Type())
	}
	b = append(b, '{')
	for i := range v.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		e := v.Index(i)
		for e.Kind() == reflect.Interface && !e.IsNil() {
			e = e.Elem()
		}
		switch {
		case e.Kind() == reflect.Interface || e.Kind() == reflect.Pointer && e.IsNil():
			b = append(b, "NULL"...)
		case e.Kind() == reflect.Slice && e.Type().Elem().Kind() != reflect.Uint8:
			var err error
			if b, err = arrayLiteral(b, e); err != nil {
				return nil, err
			}
		default:
			s, err := appendValue(nil, e.Interface(), 0)
			if err != nil {
				return nil, err
			}
			b = append(b, '"')
			for _, ch := range s {
				if ch == '"' || ch == '\\' {
					b = append(b, '\\')
				}
				b = append(b, ch)
			}
			b = append(b, '"')
		}
	}
	return append(b, '}'), nil
}

// appendValue appends a Go value as COPY text for a column of type oid.
func appendValue(b []byte, v any, oid uint32) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, `\N`...), nil
	case json.Number:
		return append(b, v...), nil
	case json.RawMessage:
		return appendEscaped(b, v), nil
	case map[string]any, []any:
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode as JSON: %w", err)
		}
		return appendEscaped(b, raw), nil
	case int16:
		return strconv.AppendInt(b, int64(v), 10), nil
	case []byte:
		if oid == pgtype.ByteaOID {
			// bytea's hex input form; the backslash itself is escaped for COPY.
			return hex.AppendEncode(append(b, `\\x`...), v), nil
		}
		return appendEscaped(b, v), nil
	case string:
		return appendEscaped(b, []byte(v)), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case int32:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case uint64:
		return strconv.AppendUint(b, v, 10), nil
	case float64:
		return appendFloat(b, v, 64)
	case float32:
		return appendFloat(b, float64(v), 32)
	case bool:
		return strconv.AppendBool(b, v), nil
	case time.Time:
		if oid == pgtype.DateOID {
			return v.UTC().AppendFormat(b, time.DateOnly), nil
		}
		return v.UTC().AppendFormat(b, time.RFC3339Nano), nil
	}
	return appendEscaped(b, fmt.Append(nil, v)), nil
}

func appendFloat(b []byte, f float64, bits int) ([]byte, error) {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...), nil
	case math.IsInf(f, 1):
		return append(b, "Infinity"...), nil
	case math.IsInf(f, -1):
		return append(b, "-Infinity"...), nil
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits), nil
}

// errCopyStopped tells a source writing into a COPY that the COPY ended early.
var errCopyStopped = errors.New("copy into the target stopped")

// copyIn runs the target's COPY … FROM STDIN (sql) fed by write, which runs in its own
// goroutine and writes the whole data (header to trailer). A failure of write (the source)
// is what the caller sees, rather than the COPY it aborted.
func copyIn(ctx context.Context, conn *pgconn.PgConn, sql string, write func(io.Writer) error) (int64, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := write(pw)
		pw.CloseWithError(err) // nil: the COPY sees the end of its data
		done <- err
	}()
	tag, err := conn.CopyFrom(ctx, pr, sql)
	pr.CloseWithError(errCopyStopped) // release a writer the COPY stopped reading
	if werr := <-done; werr != nil && !errors.Is(werr, errCopyStopped) {
		return 0, werr
	}
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
