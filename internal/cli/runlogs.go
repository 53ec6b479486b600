package cli

import (
	"context"
	"io"

	"github.com/rs/zerolog"

	"github.com/etlexec/etlexec/internal/logsink"
	"github.com/etlexec/etlexec/internal/store"
)

// newRunLogs builds the worker's logger: every line goes to w (stdout stays the primary sink,
// with secrets scrubbed), and lines that belong to a run also land in dw_etl_run_logs through
// the bounded, non-blocking sink.
func newRunLogs(ctx context.Context, st *store.Store, w io.Writer, level, format string, base zerolog.Logger) (*runLogs, error) {
	sink, err := logsink.New(st, logsink.Config{Logger: &base})
	if err != nil {
		return nil, err
	}
	sink.Start(context.WithoutCancel(ctx))
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	logger := zerolog.New(zerolog.MultiLevelWriter(logsink.RedactWriter(w, sink.Secrets), sink)).Level(lvl).With().Timestamp().Logger()
	if format == "console" {
		logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.ConsoleWriter{Out: logsink.RedactWriter(w, sink.Secrets)}, sink)).Level(lvl).With().Timestamp().Logger()
	}
	return &runLogs{
		logger:     logger,
		addSecrets: sink.AddSecrets,
		close: func(ctx context.Context) {
			if err := sink.Close(ctx); err != nil {
				base.Warn().Err(err).Msg("log sink close")
			}
			base.Info().Int64("log_lines_written", sink.Written()).Int64("log_lines_dropped", sink.Dropped()).Msg("run logs flushed")
		},
	}, nil
}
