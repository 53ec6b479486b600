package servertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures a private redis-server.
type RedisOptions struct {
	// Args are extra redis-server arguments, e.g. "--maxmemory-policy", "allkeys-lru".
	Args []string
}

// Bounds of the Redis waits.
const (
	redisStartTimeout = 10 * time.Second
	redisStopTimeout  = 10 * time.Second
	// redisCallTimeout bounds each command sent through Do and the helpers built on it.
	redisCallTimeout = 5 * time.Second
)

// RedisServer is one private redis-server on a loopback port, without persistence, in a temp
// dir of its own. Methods are safe for concurrent use except Close.
type RedisServer struct {
	port   int
	dir    string
	args   []string
	client *redis.Client

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}

	closeOnce sync.Once
}

// Redis starts a private redis-server for t and kills it when t ends, printing its log's tail
// if t failed. It skips t when redis-server is not installed (fails under CI).
func Redis(t testing.TB, opts RedisOptions) *RedisServer {
	t.Helper()
	r, err := StartRedis(opts)
	return forTest(t, r, err)
}

// StartRedis starts a private redis-server on a free port; Close it when done.
func StartRedis(opts RedisOptions) (*RedisServer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server: %w (%w)", err, errMissing)
	}
	dir, err := os.MkdirTemp("", "etlexec-redis-")
	if err != nil {
		return nil, err
	}
	r := &RedisServer{dir: dir, args: opts.Args}
	for range startAttempts {
		if r.port, err = FreePort(); err != nil {
			break
		}
		if err = r.start(); err == nil {
			// The harness's own control connection: a FLUSHALL of 50,000 tasks on a machine
			// with CPU hogs beside it took over 2 s, and a fault must not fail to happen
			// because the harness gave up first. Tests bound their whole wait themselves.
			r.client = redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: 5 * time.Second,
				ReadTimeout: adminTimeout, WriteTimeout: adminTimeout, MaxRetries: -1})
			return r, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, err
}

// Addr is host:port.
func (r *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL is the redis:// URL of database 0.
func (r *RedisServer) URL() string { return "redis://" + r.Addr() + "/0" }

// Port is the server's port; Restart keeps it.
func (r *RedisServer) Port() int { return r.port }

// String names the server.
func (r *RedisServer) String() string { return "redis on " + r.Addr() }

// LogTail returns the last n lines of the server's log.
func (r *RedisServer) LogTail(n int) string { return Tail(r.Log(), n) }

// Log returns the server's log.
func (r *RedisServer) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	return string(b)
}

// Do sends one command and returns its reply.
func (r *RedisServer) Do(args ...any) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisCallTimeout)
	defer cancel()
	v, err := r.client.Do(ctx, args...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis %v on %s: %w", args[0], r.Addr(), err)
	}
	return v, nil
}

// adminTimeout bounds one command of the harness's control connection (FLUSHALL, CONFIG SET).
const adminTimeout = 30 * time.Second

// FlushAll drops every key.
func (r *RedisServer) FlushAll() error {
	_, err := r.Do("FLUSHALL")
	return err
}

// ConfigSet sets one configuration parameter.
func (r *RedisServer) ConfigSet(name, value string) error {
	_, err := r.Do("CONFIG", "SET", name, value)
	return err
}

// Info returns the fields of INFO section as name → value.
func (r *RedisServer) Info(section string) (map[string]string, error) {
	v, err := r.Do("INFO", section)
	if err != nil {
		return nil, err
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("redis INFO %s: reply %T", section, v)
	}
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		k, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && !strings.HasPrefix(k, "#") {
			out[k] = val
		}
	}
	return out, nil
}

// InfoInt is one numeric INFO field.
func (r *RedisServer) InfoInt(section, field string) (int64, error) {
	info, err := r.Info(section)
	if err != nil {
		return 0, err
	}
	v, ok := info[field]
	if !ok {
		return 0, fmt.Errorf("redis INFO %s has no %s", section, field)
	}
	return strconv.ParseInt(v, 10, 64)
}

// Freeze stops the server with SIGSTOP: connections stay open, nothing answers.
func (r *RedisServer) Freeze() error { return r.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (r *RedisServer) Thaw() error { return r.signal(syscall.SIGCONT) }

// Kill SIGKILLs the server and waits for it to exit; its data is gone.
func (r *RedisServer) Kill() error {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
		return nil
	case <-time.After(redisStopTimeout):
		return fmt.Errorf("redis-server %d did not exit within %s of SIGKILL", cmd.Process.Pid, redisStopTimeout)
	}
}

// Restart kills the server (if running) and starts an empty one on the same port.
func (r *RedisServer) Restart() error {
	if err := r.Kill(); err != nil {
		return err
	}
	// The port was ours a moment ago; a client's reconnect cannot take a listening port, so
	// a failure here is worth retrying only briefly.
	var err error
	for range startAttempts {
		if err = r.start(); err == nil {
			return nil
		}
	}
	return err
}

// Close kills the server and removes its directory. Safe to call twice.
func (r *RedisServer) Close() {
	r.closeOnce.Do(func() {
		_ = r.Kill()
		if r.client != nil {
			_ = r.client.Close()
		}
		_ = os.RemoveAll(r.dir)
	})
}

func (r *RedisServer) signal(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return errors.New("redis-server is not running")
	}
	return r.cmd.Process.Signal(sig)
}

// start runs redis-server on r.port and waits until it answers PING.
func (r *RedisServer) start() error {
	logPath := filepath.Join(r.dir, "redis.log")
	args := append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", r.dir, "--logfile", logPath}, r.args...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	probe := redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: time.Second, MaxRetries: -1})
	defer probe.Close()
	err := Poll(redisStartTimeout, 0, func() (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("redis-server exited: %s", Tail(r.Log(), 5))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := probe.Ping(ctx).Err(); err != nil {
			return false, &Retry{err}
		}
		return true, nil
	})
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server on %s: %w", r.Addr(), err)
	}
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
	return nil
}

// CPUTime is the user+system CPU the server process has used so far.
func (r *RedisServer) CPUTime() (time.Duration, error) {
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return 0, fmt.Errorf("redis-server on port %d is not running", r.port)
	}
	return procCPU(cmd.Process.Pid)
}
