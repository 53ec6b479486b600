package dbmigrate_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etlexec/etlexec/internal/dbmigrate"
	"github.com/etlexec/etlexec/internal/dbtest"
)

func TestApplyThenNoDrift(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := dbtest.EmptyDatabase(t)
	db, err := dbmigrate.Open(u)
	require.NoError(t, err)
	defer db.Close()
	m := &dbmigrate.Migrator{DB: db}
	rep, err := m.Apply(ctx)
	require.NoError(t, err)
	require.Len(t, rep.Applied, 2)
	rep, err = m.Apply(ctx)
	require.NoError(t, err)
	require.Empty(t, rep.Applied, "second apply must be a no-op")
	drift, err := dbmigrate.Drift(ctx, db, dbtest.ServerURL(), nil)
	require.NoError(t, err)
	require.Empty(t, drift)
}
