// Package serve owns `enqueuer serve`: one HTTP server that puts the web console, the /api/v1
// JSON API and asynqmon behind one authentication, and answers /healthz and /readyz without it.
// The console reads through the store's history queries and acts (trigger, cancel, rerun,
// pause, resume) through the /api/v1 writes from its script, or its own form routes without
// it; both call internal/ops, the same functions the CLI calls.
package serve

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/enqueue"
	"github.com/etlexec/etlexec/internal/health"
	"github.com/etlexec/etlexec/internal/httpapi"
	"github.com/etlexec/etlexec/internal/store"
	"github.com/etlexec/etlexec/internal/task"
	"github.com/etlexec/etlexec/internal/telemetry"
)

const (
	// AddrDefault is where the server listens when Config.Addr is empty.
	AddrDefault = ":8080"
	// ShutdownTimeoutDefault is how long in-flight requests may finish once Run's context ends.
	ShutdownTimeoutDefault = 10 * time.Second
	// AsynqmonPath is where asynqmon is mounted.
	AsynqmonPath = "/asynqmon"
	// Realm is the basic-auth realm browsers show in their prompt.
	Realm = "etlexec"
)

// Config configures a Server. Zero values take the documented defaults (see WithDefaults).
type Config struct {
	// Store is etlexec's database; required.
	Store *store.Store
	// Redis is the Redis asynq delivers through, for asynqmon and readiness; required.
	Redis asynq.RedisConnOpt
	// Addr is the listen address. Env ETL_HTTP_ADDR, flag --addr. Defaults to AddrDefault.
	Addr string
	// Token is a shared secret accepted as `Authorization: Bearer <Token>` (scripts) and as the
	// basic-auth password with any user name (browsers). Env ETL_SERVE_TOKEN.
	Token string
	// BasicUser and BasicPassword are an alternative basic-auth credential (both or neither).
	// Env ETL_SERVE_USER, ETL_SERVE_PASSWORD.
	BasicUser, BasicPassword string
	// Insecure allows starting without any credential (everything but /healthz and /readyz is
	// then open). It is refused unless Addr binds a loopback address. Flag --insecure.
	Insecure bool
	// ReadOnly makes asynqmon view-only, hides the console's action buttons and answers their
	// POST endpoints and every /api/v1 write 403. Flag --read-only.
	ReadOnly bool
	// AllowQueryToken also accepts the token as a `?token=` query parameter. Tests only (a
	// headless browser cannot send headers): URLs end up in logs and histories.
	AllowQueryToken bool
	// ShutdownTimeout bounds the graceful shutdown. Defaults to ShutdownTimeoutDefault.
	ShutdownTimeout time.Duration
	Logger          zerolog.Logger
}

// WithDefaults fills unset fields.
func (c *Config) WithDefaults() {
	if c.Addr == "" {
		c.Addr = AddrDefault
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = ShutdownTimeoutDefault
	}
}

// ErrNoCredentials is returned by Validate when no credential is configured and Insecure is off.
var ErrNoCredentials = errors.New("no credentials: set ETL_SERVE_TOKEN (bearer token, also accepted as the basic-auth password), " +
	"or ETL_SERVE_USER and ETL_SERVE_PASSWORD; --insecure serves without authentication on a loopback address only")

// Validate checks the operator's settings (address and credentials) and reports every one
// that is wrong; call it after WithDefaults. New checks the wiring (Store, Redis) itself, so a
// command can validate before it connects anywhere.
func (c *Config) Validate() error {
	var errs []error
	if (c.BasicUser == "") != (c.BasicPassword == "") {
		errs = append(errs, errors.New("ETL_SERVE_USER and ETL_SERVE_PASSWORD: set both or neither"))
	}
	if strings.ContainsRune(c.BasicUser, ':') {
		errs = append(errs, errors.New("ETL_SERVE_USER: must not contain ':' (basic auth splits on it)"))
	}
	if c.Token == "" && (c.BasicUser == "" || c.BasicPassword == "") && !c.Insecure {
		errs = append(errs, ErrNoCredentials)
	}
	if c.Insecure {
		if err := loopbackOnly(c.Addr); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loopbackOnly accepts an address that binds a loopback interface only.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--addr/ETL_HTTP_ADDR %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--insecure serves without authentication and is allowed only on a loopback address "+
		"(127.0.0.1:8080, [::1]:8080, localhost:8080), but --addr/ETL_HTTP_ADDR is %q; "+
		"set ETL_SERVE_TOKEN or ETL_SERVE_USER/ETL_SERVE_PASSWORD instead", addr)
}

// Server is the HTTP front of etlexec.
type Server struct {
	cfg      Config
	log      zerolog.Logger
	handler  http.Handler
	monitor  *asynqmon.HTTPHandler
	redis    redis.UniversalClient
	insp     *asynq.Inspector
	enq      *enqueue.Enqueuer
	console  *console
	tokenSum [32]byte
	userSum  [32]byte
	passSum  [32]byte
}

// New validates cfg and builds the server; it opens Redis clients, released by Close (Run
// closes them itself).
func New(cfg Config) (*Server, error) {
	cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Store == nil || cfg.Redis == nil {
		return nil, errors.New("serve config: Store and Redis are required")
	}
	rc, ok := cfg.Redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("serve config: unsupported Redis option %T", cfg.Redis)
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger.With().Str("component", "serve").Logger(),
		redis: rc,
		monitor: asynqmon.New(asynqmon.Options{
			RootPath: AsynqmonPath, RedisConnOpt: cfg.Redis, ReadOnly: cfg.ReadOnly,
			// Item payloads are binary; show them as the JSON they stand for.
			PayloadFormatter: asynqmon.PayloadFormatterFunc(task.FormatPayload),
		}),
		insp:     asynq.NewInspector(cfg.Redis),
		tokenSum: sha256.Sum256([]byte(cfg.Token)),
		userSum:  sha256.Sum256([]byte(cfg.BasicUser)),
		passSum:  sha256.Sum256([]byte(cfg.BasicPassword)),
	}
	enq, err := enqueue.New(enqueue.Config{Store: cfg.Store, Redis: cfg.Redis, Logger: s.log})
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	s.enq = enq
	c, err := newConsole(s)
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	s.console = c
	s.handler = s.routes()
	return s, nil
}

// Handler is the server's whole routing tree, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the Redis clients. Run calls it on return.
func (s *Server) Close() error {
	var enqErr error
	if s.enq != nil {
		enqErr = s.enq.Close()
	}
	return errors.Join(s.monitor.Close(), s.insp.Close(), enqErr, s.redis.Close())
}

// routes: /healthz, /readyz and the embedded static assets (code, no data) are open; every
// other path goes through authentication, then the cross-origin guard for unsafe methods.
func (s *Server) routes() http.Handler {
	private := http.NewServeMux()
	private.Handle(AsynqmonPath+"/", s.monitor)
	private.Handle("/api/v1/", httpapi.New(httpapi.Config{Store: s.cfg.Store, Enqueuer: s.enq,
		ReadOnly: s.cfg.ReadOnly, Principal: principal}))
	s.console.register(private)

	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "cross-origin request refused: POST from the console's own pages", http.StatusForbidden)
	}))

	root := http.NewServeMux()
	root.HandleFunc("GET /healthz", health.Live)
	root.Handle("GET /readyz", health.Ready(health.Postgres(s.cfg.Store.Pool()), health.Redis(func(ctx context.Context) error {
		return s.redis.Ping(ctx).Err()
	})))
	// Counts only (queue depth and latency, runtime); kept open like the probes so Prometheus
	// can scrape it; restrict it with the NetworkPolicy.
	root.Handle("GET /metrics", promhttp.HandlerFor(telemetry.NewMetrics(s.insp).Registry, promhttp.HandlerOpts{}))
	root.Handle("GET /static/", staticHandler())
	root.Handle("/", s.authenticate(csrf.Handler(private)))
	return root
}

// ready answers 200 when Postgres and Redis both answer within two seconds.
type principalKey struct{}

// principal names who is authenticated on r ("alice", "token", "anonymous").
func principal(r *http.Request) string {
	if p, ok := r.Context().Value(principalKey{}).(string); ok {
		return p
	}
	return "anonymous"
}

// authenticate admits a request carrying the bearer token, the token as a basic-auth password
// (any user), or the basic user and password. Secrets are compared as SHA-256 digests with
// subtle.ConstantTimeCompare, so neither content nor length leaks through timing.
func (s *Server) authenticate(next http.Handler) http.Handler {
	open := s.cfg.Token == "" && s.cfg.BasicUser == ""
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, ok := "anonymous", open
		if !open {
			who, ok = s.check(r)
		}
		if !ok {
			s.log.Debug().Str("remote_addr", r.RemoteAddr).Str("path", r.URL.Path).Msg("unauthenticated request")
			w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`", charset="UTF-8"`)
			http.Error(w, "authentication required: Authorization: Bearer <ETL_SERVE_TOKEN>, or basic auth", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, who)))
	})
}

func (s *Server) check(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return "token", s.cfg.Token != "" && s.equal(s.tokenSum, strings.TrimSpace(h[7:]))
	}
	if user, pass, ok := r.BasicAuth(); ok {
		tokenOK := s.cfg.Token != "" && s.equal(s.tokenSum, pass)
		basicOK := s.cfg.BasicUser != "" && s.equal(s.userSum, user) && s.equal(s.passSum, pass)
		switch {
		case basicOK:
			return user, true
		case tokenOK && user != "":
			return user + " (token)", true
		case tokenOK:
			return "token", true
		}
		return "", false
	}
	if s.cfg.AllowQueryToken && s.cfg.Token != "" {
		if t := r.URL.Query().Get("token"); t != "" && s.equal(s.tokenSum, t) {
			return "token", true
		}
	}
	return "", false
}

func (s *Server) equal(want [32]byte, got string) bool {
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(want[:], sum[:]) == 1
}

// Run listens on Addr and serves until ctx ends, then shuts down gracefully: the listener
// closes first, in-flight requests get ShutdownTimeout to finish, and the Redis clients close
// last.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		_ = s.Close()
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.Close()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.log.WithContext(context.WithoutCancel(ctx)) },
	}
	s.log.Info().Str("addr", ln.Addr().String()).Bool("read_only", s.cfg.ReadOnly).
		Bool("insecure", s.cfg.Token == "" && s.cfg.BasicUser == "").Msg("serving the console, /api/v1 and " + AsynqmonPath)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("shut down server on %s: %w", ln.Addr(), err)
	}
	s.log.Info().Msg("server stopped")
	return nil
}
