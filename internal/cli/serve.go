package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/etlexec/etlexec/internal/config"
	"github.com/etlexec/etlexec/internal/serve"
)

func init() { register(serveCmd) }

// serveEnv is the environment of `enqueuer serve`; flags override it.
type serveEnv struct {
	// Addr is the listen address. Env ETL_HTTP_ADDR; default serve.AddrDefault.
	Addr string `env:"ETL_HTTP_ADDR"`
	// Token is the bearer token (also the basic-auth password, any user). Env ETL_SERVE_TOKEN.
	Token string `env:"ETL_SERVE_TOKEN"`
	// User and Password are an alternative basic-auth credential. Env ETL_SERVE_USER,
	// ETL_SERVE_PASSWORD.
	User     string `env:"ETL_SERVE_USER"`
	Password string `env:"ETL_SERVE_PASSWORD"`
}

func serveCmd(e *env) *cobra.Command {
	var (
		se       serveEnv
		insecure bool
		readOnly bool
	)
	loadErr := config.Load(&se) // reported when the command runs
	if se.Addr == "" {
		se.Addr = serve.AddrDefault
	}
	cmd := &cobra.Command{
		Use:   "serve [--addr :8080] [--insecure] [--read-only]",
		Short: "Serve the web console, the /api/v1 JSON API and asynqmon behind one login",
		Long: `Serve the web console at /, the JSON API at /api/v1 and asynqmon at /asynqmon, all behind
authentication; /healthz and /readyz stay open for probes.

Authentication: ETL_SERVE_TOKEN is accepted as "Authorization: Bearer <token>" (scripts) and as
the basic-auth password with any user name (browsers prompt for it); ETL_SERVE_USER and
ETL_SERVE_PASSWORD add a named basic-auth login. Without either the server refuses to start,
unless --insecure is given and --addr binds a loopback address (127.0.0.1, ::1, localhost).

The JSON API at /api/v1 also takes the operator's writes (trigger with an Idempotency-Key,
cancel, rerun, pause, resume; GET /api/v1/openapi.json describes them), and the console's
buttons use it.

--read-only makes asynqmon view-only, removes the console's actions and answers every API
write 403.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if loadErr != nil {
				return fmt.Errorf("configuration: %w", loadErr)
			}
			ctx := cmd.Context()
			cfg := serve.Config{
				Addr: se.Addr, Token: se.Token, BasicUser: se.User, BasicPassword: se.Password,
				Insecure: insecure, ReadOnly: readOnly, Logger: e.log,
			}
			// Check the address and credentials before connecting anywhere.
			cfg.WithDefaults()
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			redis, err := e.redisOpt()
			if err != nil {
				return err
			}
			st, err := e.store(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			cfg.Store, cfg.Redis = st, redis
			srv, err := serve.New(cfg)
			if err != nil {
				return err
			}
			e.log.Info().Str("addr", cfg.Addr).Str("database_url", config.Redact(e.cfg.DatabaseURL)).
				Str("redis_url", config.Redact(e.cfg.RedisURL)).Bool("read_only", readOnly).Msg("serve starting")
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&se.Addr, "addr", se.Addr, "listen address (env ETL_HTTP_ADDR)")
	f.BoolVar(&insecure, "insecure", false, "serve without authentication; allowed only on a loopback --addr")
	f.BoolVar(&readOnly, "read-only", false, "view only: asynqmon read-only, no console actions, API writes answer 403")
	return cmd
}
