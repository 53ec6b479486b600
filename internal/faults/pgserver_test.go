package faults_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// pgServer is a private Postgres cluster (initdb + pg_ctl from `pg_config --bindir`) on a free
// loopback port, run as the postgres OS user when the test runs as root. It never touches the
// shared server.
type pgServer struct {
	bindir string
	dir    string // parent of data; also the unix socket dir
	data   string
	port   int
	log    string
}

// asPG runs a Postgres binary as the postgres OS user when we are root.
func asPG(name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

func startPostgres(t *testing.T) *pgServer {
	t.Helper()
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		t.Skipf("pg_config not available: %v", err)
	}
	bindir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(bindir, "initdb")); err != nil {
		t.Skipf("no initdb in %s: %v", bindir, err)
	}
	// t.TempDir is 0700 and owned by us; the postgres user needs its own dir.
	dir, err := os.MkdirTemp("", "etlexec-pg-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			t.Skipf("running as root but there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		require.NoError(t, os.Chown(dir, uid, gid))
	}
	s := &pgServer{bindir: bindir, dir: dir, data: filepath.Join(dir, "data"), log: filepath.Join(dir, "postgres.log")}
	t.Cleanup(func() {
		_ = asPG(s.bin("pg_ctl"), "stop", "-D", s.data, "-m", "immediate", "-w", "-t", "30").Run()
		if t.Failed() || os.Getenv("FAULTS_LOGS") != "" {
			b, _ := os.ReadFile(s.log)
			t.Logf("---- private postgres log ----\n%s", tail(string(b), 80))
		}
		os.RemoveAll(dir)
	})
	if out, err := asPG(s.bin("initdb"), "-D", s.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C", "--no-instructions", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	conf := "\nlisten_addresses = '127.0.0.1'\nmax_connections = 200\nfsync = on\n"
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(conf)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	for try := 0; ; try++ {
		s.port = freePort(t)
		out, err := s.ctl("start", 60*time.Second)
		if err == nil {
			break
		}
		_, _ = s.ctl("stop -m immediate", 30*time.Second)
		if try == 3 {
			b, _ := os.ReadFile(s.log)
			t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, tail(string(b), 30))
		}
	}
	admin := s.url("postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, admin)
	require.NoError(t, err)
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "CREATE DATABASE etlexec")
	require.NoError(t, err)
	return s
}

func (s *pgServer) bin(name string) string { return filepath.Join(s.bindir, name) }

func (s *pgServer) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// ctl runs `pg_ctl <args>` against the cluster, waiting at most timeout. start and restart
// carry the port and the socket dir.
func (s *pgServer) ctl(args string, timeout time.Duration) (string, error) {
	a := strings.Fields(args)
	full := append([]string{a[0], "-D", s.data, "-w", "-t", strconv.Itoa(int(timeout.Seconds())), "-s"}, a[1:]...)
	if a[0] == "start" || a[0] == "restart" {
		full = append(full, "-l", s.log, "-o", fmt.Sprintf("-p %d -k %s", s.port, s.dir))
	}
	out, err := asPG(s.bin("pg_ctl"), full...).CombinedOutput()
	return string(out), err
}
