package servertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresOptions configures a private Postgres. The zero value is a test server: fsync off,
// MaxConnectionsDefault connections, nothing preloaded.
type PostgresOptions struct {
	// MaxConnections is max_connections. Defaults to MaxConnectionsDefault.
	MaxConnections int
	// StatStatements preloads pg_stat_statements with track = all, track_utility and
	// track_planning on;
	// CREATE EXTENSION pg_stat_statements in the database you read it from.
	StatStatements bool
	// Fsync makes commits durable (fsync = on). Off by default: tests kill processes, never
	// the machine, so an unflushed page cache loses nothing; benchmarks want it on.
	Fsync bool
	// Settings are further postgresql.conf settings, name to value exactly as the file wants
	// it (quote strings yourself); they are written last, so they win.
	Settings map[string]string
	// Template names a data directory prepared once per process: the first server started
	// with this name runs Prepare on a fresh cluster and keeps a copy of its stopped data
	// directory; every later one with the name starts from that copy. A name must always come
	// with the same Prepare. Empty: a fresh initdb (itself copied from a per-process template).
	Template string
	// Prepare builds the template named Template, e.g. creates and migrates a database.
	Prepare func(ctx context.Context, s *PostgresServer) error
}

// Defaults of PostgresOptions and bounds of its waits.
const (
	MaxConnectionsDefault = 200
	// pgCtlTimeout bounds every pg_ctl start, stop and restart.
	pgCtlTimeout = 60 * time.Second
	// prepareTimeout bounds a template's Prepare.
	prepareTimeout = 5 * time.Minute
)

// Shutdown modes of Stop and Restart (pg_ctl -m).
const (
	Fast      = "fast"
	Immediate = "immediate"
)

// PostgresServer is one private cluster on a loopback port; its unix socket and log live in
// its own temp dir. Methods are safe for concurrent use except Close.
type PostgresServer struct {
	dir  string // owned by the postgres OS user when we are root; socket dir and log
	data string
	port int
	log  string

	closeOnce sync.Once
}

// Postgres starts a private Postgres for t and stops it when t ends, printing its log's tail
// if t failed. It skips t when Postgres is not installed (fails under CI).
func Postgres(t testing.TB, opts PostgresOptions) *PostgresServer {
	t.Helper()
	s, err := StartPostgres(opts)
	return forTest(t, s, err)
}

// StartPostgres starts a private Postgres; Close it when done.
func StartPostgres(opts PostgresOptions) (*PostgresServer, error) {
	if opts.MaxConnections == 0 {
		opts.MaxConnections = MaxConnectionsDefault
	}
	tmpl, err := templateData(opts.Template, opts.Prepare)
	if err != nil {
		return nil, err
	}
	s, err := newCluster(tmpl)
	if err != nil {
		return nil, err
	}
	if err := s.startOnFreePort(opts); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Port is the server's loopback TCP port.
func (s *PostgresServer) Port() int { return s.port }

// String names the server.
func (s *PostgresServer) String() string { return fmt.Sprintf("postgres on port %d", s.port) }

// URL is the URL of database db as the trusted superuser postgres.
func (s *PostgresServer) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// LogPath is the server's log file.
func (s *PostgresServer) LogPath() string { return s.log }

// Log returns the server's whole log.
func (s *PostgresServer) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// LogTail returns the last n lines of the server's log.
func (s *PostgresServer) LogTail(n int) string { return Tail(s.Log(), n) }

// CreateDatabase creates an empty database.
func (s *PostgresServer) CreateDatabase(ctx context.Context, name string) error {
	c, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// Restart restarts the server with pg_ctl restart -m mode (Fast or Immediate); clients must
// reconnect.
func (s *PostgresServer) Restart(mode string) error {
	_, err := s.ctl("restart", "-m", mode, "-l", s.log)
	return err
}

// Stop stops the server with pg_ctl stop -m mode (Fast or Immediate).
func (s *PostgresServer) Stop(mode string) error {
	_, err := s.ctl("stop", "-m", mode)
	return err
}

// Start starts a stopped server again on its port.
func (s *PostgresServer) Start() error {
	_, err := s.ctl("start", "-l", s.log)
	return err
}

// PostmasterPID is the running postmaster's pid (first line of postmaster.pid).
func (s *PostgresServer) PostmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(s.data, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// Freeze stops the postmaster and every backend and auxiliary process with SIGSTOP: clients'
// sockets stay open and nothing answers. The postmaster goes first so it forks no new child.
func (s *PostgresServer) Freeze() error {
	pm, err := s.PostmasterPID()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP postmaster %d: %w", pm, err)
	}
	kids, err := children(pm)
	for _, pid := range kids {
		err = errors.Join(err, syscall.Kill(pid, syscall.SIGSTOP))
	}
	return err
}

// Thaw resumes what Freeze stopped, children first.
func (s *PostgresServer) Thaw() error {
	pm, err := s.PostmasterPID()
	if err != nil {
		return err
	}
	kids, err := children(pm)
	for _, pid := range kids {
		err = errors.Join(err, syscall.Kill(pid, syscall.SIGCONT))
	}
	return errors.Join(err, syscall.Kill(pm, syscall.SIGCONT))
}

// CPUTime is the user+system CPU the server has used: the postmaster's own and that of its
// children, living (read now) and exited (the postmaster's cumulative children times). A
// difference of two readings is the server's CPU over the interval, whatever forked or exited
// in between, provided the postmaster did not restart.
func (s *PostgresServer) CPUTime() (time.Duration, error) {
	pm, err := s.PostmasterPID()
	if err != nil {
		return 0, err
	}
	total, err := procCPU(pm)
	if err != nil {
		return 0, err
	}
	kids, err := children(pm)
	if err != nil {
		return 0, err
	}
	for _, pid := range kids {
		d, err := procCPU(pid)
		if err != nil {
			continue // exited since the listing: its time is in the postmaster's cumulative part now
		}
		total += d
	}
	return total, nil
}

// Close stops the server (immediate; thawed first if frozen) and removes its directory. Safe
// to call twice.
func (s *PostgresServer) Close() {
	s.closeOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(s.data, "postmaster.pid")); err == nil {
			_ = s.Thaw() // a stopped postmaster would not act on the shutdown signal
			_, _ = s.ctl("stop", "-m", Immediate)
		}
		_ = os.RemoveAll(s.dir)
	})
}

// startOnFreePort writes the settings for a free port and starts the server, trying other
// ports when the start fails (most likely a port taken since FreePort).
func (s *PostgresServer) startOnFreePort(opts PostgresOptions) error {
	var err error
	for range startAttempts {
		if s.port, err = FreePort(); err != nil {
			return err
		}
		if err = s.writeSettings(opts); err != nil {
			return err
		}
		if _, err = s.ctl("start", "-l", s.log); err == nil {
			return nil
		}
		_, _ = s.ctl("stop", "-m", Immediate)
	}
	return fmt.Errorf("start postgres in %s: %w\n%s", s.data, err, s.LogTail(30))
}

// settingsFile is included by the templates' postgresql.conf, so each server's settings are
// its own file.
const settingsFile = "servertest.conf"

func (s *PostgresServer) writeSettings(opts PostgresOptions) error {
	set := map[string]string{
		"listen_addresses":        "'127.0.0.1'",
		"port":                    strconv.Itoa(s.port),
		"unix_socket_directories": "'" + s.dir + "'",
		"max_connections":         strconv.Itoa(opts.MaxConnections),
		"fsync":                   onOff(opts.Fsync),
		"log_line_prefix":         "'%m [%p] %a '",
	}
	if opts.StatStatements {
		set["shared_preload_libraries"] = "'pg_stat_statements'"
		set["pg_stat_statements.track"] = "all"
		set["pg_stat_statements.track_utility"] = "on"
		set["pg_stat_statements.track_planning"] = "on"
		set["pg_stat_statements.max"] = "10000"
	}
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(set)) {
		fmt.Fprintf(&b, "%s = %s\n", k, set[k])
	}
	for _, k := range slices.Sorted(maps.Keys(opts.Settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, opts.Settings[k])
	}
	return os.WriteFile(filepath.Join(s.data, settingsFile), b.Bytes(), 0o644)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// ctl runs pg_ctl verb -D data -w -t ... -s args as the postgres OS user.
func (s *PostgresServer) ctl(verb string, args ...string) (string, error) {
	full := append([]string{verb, "-D", s.data, "-w", "-t", strconv.Itoa(int(pgCtlTimeout.Seconds())), "-s"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), pgCtlTimeout+10*time.Second)
	defer cancel()
	out, err := asPostgres(ctx, pgBin("pg_ctl"), full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pg_ctl %s: %w: %s", verb, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// newCluster copies the template data directory tmpl into a new server directory.
func newCluster(tmpl string) (*PostgresServer, error) {
	dir, err := ownedTempDir("etlexec-pg-")
	if err != nil {
		return nil, err
	}
	s := &PostgresServer{dir: dir, data: filepath.Join(dir, "data"), log: filepath.Join(dir, "postgres.log")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, s.data).CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("copy template %s: %w: %s", tmpl, err, out)
	}
	return s, nil
}

// Templates: one initdb per process, and one prepared copy per Template name.
var (
	pgOnce   sync.Once
	pgBindir string
	pgErr    error

	tmplMu   sync.Mutex
	tmplRoot string
	tmpls    = map[string]*pgTemplate{}
)

type pgTemplate struct {
	once sync.Once
	data string
	err  error
}

// pgBin is the path of a Postgres program.
func pgBin(name string) string { return filepath.Join(pgBindir, name) }

func findPostgres() error {
	pgOnce.Do(func() {
		out, err := exec.Command("pg_config", "--bindir").Output()
		if err != nil {
			pgErr = fmt.Errorf("pg_config --bindir: %w (%w)", err, errMissing)
			return
		}
		pgBindir = strings.TrimSpace(string(out))
		if _, err := os.Stat(pgBin("initdb")); err != nil {
			pgErr = fmt.Errorf("initdb in %s: %w (%w)", pgBindir, err, errMissing)
		}
	})
	return pgErr
}

// templateData returns the data directory to copy for name, building it on first use.
func templateData(name string, prepare func(context.Context, *PostgresServer) error) (string, error) {
	if err := findPostgres(); err != nil {
		return "", err
	}
	tmplMu.Lock()
	if tmplRoot == "" {
		root, err := ownedTempDir("etlexec-pgtmpl-")
		if err != nil {
			tmplMu.Unlock()
			return "", err
		}
		tmplRoot = root
	}
	t, ok := tmpls[name]
	if !ok {
		t = &pgTemplate{}
		tmpls[name] = t
	}
	root := tmplRoot
	tmplMu.Unlock()
	t.once.Do(func() {
		if name == "" {
			t.data, t.err = initTemplate(root)
			return
		}
		if prepare == nil {
			t.err = fmt.Errorf("postgres template %q: no Prepare", name)
			return
		}
		t.data, t.err = prepareTemplate(root, name, prepare)
	})
	return t.data, t.err
}

// initTemplate runs initdb once into root/base and makes its postgresql.conf include each
// server's settings file.
func initTemplate(root string) (string, error) {
	data := filepath.Join(root, "base")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := asPostgres(ctx, pgBin("initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C", "--no-instructions", "--no-sync").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("initdb: %w\n%s", err, out)
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintf(f, "\ninclude_if_exists = '%s'\n", settingsFile)
	return data, errors.Join(err, f.Close())
}

// prepareTemplate starts a server from the base template, runs prepare, stops it cleanly and
// keeps its data directory as root/<name>.
func prepareTemplate(root, name string, prepare func(context.Context, *PostgresServer) error) (string, error) {
	base, err := templateData("", nil)
	if err != nil {
		return "", err
	}
	s, err := newCluster(base)
	if err != nil {
		return "", err
	}
	defer s.Close()
	if err := s.startOnFreePort(PostgresOptions{MaxConnections: MaxConnectionsDefault}); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), prepareTimeout)
	defer cancel()
	if err := prepare(ctx, s); err != nil {
		return "", fmt.Errorf("prepare postgres template %q: %w", name, err)
	}
	if err := s.Stop(Fast); err != nil {
		return "", err
	}
	_ = os.Remove(filepath.Join(s.data, settingsFile))
	data := filepath.Join(root, "t-"+strconv.Itoa(len(name))+"-"+sanitize(name))
	if err := os.Rename(s.data, data); err != nil {
		return "", fmt.Errorf("keep template %q: %w", name, err)
	}
	return data, nil
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, name)
}

// RemoveTemplates deletes this process's template data directories; call it when the process
// is done starting servers (a TestMain, the end of a benchmark). Servers started later build
// them again.
func RemoveTemplates() {
	tmplMu.Lock()
	defer tmplMu.Unlock()
	if tmplRoot != "" {
		_ = os.RemoveAll(tmplRoot)
	}
	tmplRoot = ""
	tmpls = map[string]*pgTemplate{}
}

// asPostgres runs a Postgres program as the postgres OS user when we are root (Postgres
// refuses to run as root).
func asPostgres(ctx context.Context, name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// ownedTempDir makes a temp dir the Postgres programs can write: world-readable and owned by
// the postgres OS user when we are root.
func ownedTempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	if os.Geteuid() != 0 {
		return dir, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("running as root needs a postgres OS user: %w (%w)", err, errMissing)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}
