package params

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
)

// Stream reads parameter sets from r one at a time, in file order and canonical form, with
// ParseFile's formats and errors, holding one set in memory at a time. Reading more than
// maxBytes is an error naming the limit (maxBytes <= 0: no limit).
func Stream(r io.Reader, maxBytes int64) iter.Seq2[json.RawMessage, error] {
	return func(yield func(json.RawMessage, error) bool) {
		lr := &limitedReader{r: r, limit: maxBytes}
		br := bufio.NewReaderSize(lr, 1<<16)
		first, err := firstByte(br)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			yield(nil, lr.wrap(err))
			return
		}
		if first == '[' {
			streamArray(br, lr, yield)
			return
		}
		streamLines(br, lr, yield)
	}
}

// firstByte skips a UTF-8 byte order mark and leading white space, and peeks the next byte.
func firstByte(br *bufio.Reader) (byte, error) {
	if bom, err := br.Peek(3); err == nil && bytes.Equal(bom, []byte("\xef\xbb\xbf")) {
		_, _ = br.Discard(3)
	}
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if b != ' ' && b != '\t' && b != '\r' && b != '\n' {
			return b, br.UnreadByte()
		}
	}
}

func streamArray(br *bufio.Reader, lr *limitedReader, yield func(json.RawMessage, error) bool) {
	dec := json.NewDecoder(br)
	if _, err := dec.Token(); err != nil {
		yield(nil, lr.wrap(fmt.Errorf("%w: %w", ErrInvalid, err)))
		return
	}
	i := 0
	for ; dec.More(); i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			yield(nil, lr.wrap(fmt.Errorf("element %d: %w: %w", i, ErrInvalid, err)))
			return
		}
		set, err := canonicalSet(raw)
		if err != nil {
			yield(nil, fmt.Errorf("element %d: %w", i, err))
			return
		}
		if !yield(set, nil) {
			return
		}
	}
	if _, err := dec.Token(); err != nil {
		yield(nil, lr.wrap(fmt.Errorf("%w: after element %d: %w", ErrInvalid, i-1, eofIsUnexpected(err))))
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		yield(nil, lr.wrap(fmt.Errorf("%w: unexpected data after the array", ErrInvalid)))
	}
}

func streamLines(br *bufio.Reader, lr *limitedReader, yield func(json.RawMessage, error) bool) {
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			yield(nil, lr.wrap(err))
			return
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			set, serr := canonicalSet(t)
			if serr != nil {
				yield(nil, lr.wrap(fmt.Errorf("line %d: %w", n, serr)))
				return
			}
			if !yield(set, nil) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// limitedReader fails once more than limit bytes were read (limit <= 0: never), so a limit is
// an error, never a silent truncation.
type limitedReader struct {
	r        io.Reader
	limit    int64
	read     int64
	exceeded bool
}

var errLimit = errors.New("params limit")

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.limit <= 0 {
		return l.r.Read(p)
	}
	if l.read >= l.limit {
		// One byte more tells a file of exactly limit bytes from a longer one.
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n == 0 {
			return 0, io.EOF
		}
		l.exceeded = true
		return 0, errLimit
	}
	if left := l.limit - l.read; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}

// wrap turns whatever error reading past the limit caused into the limit's own error.
func (l *limitedReader) wrap(err error) error {
	if l.exceeded {
		return fmt.Errorf("%w: params file exceeds the limit of %d bytes", ErrInvalid, l.limit)
	}
	return err
}
