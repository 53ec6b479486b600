package dbmigrate

// This file is compiled only into the package's tests: the drift check is what keeps
// internal/schema's migrations/ and schema.hcl in step (TestDrift), and no command of ours
// needs it.

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/postgres"
	"ariga.io/atlas/sql/schema"
)

// Drift returns the SQL that would take the live database's public schema to schema.hcl; empty
// means no drift. Partition children are invisible to Atlas's inspection and so never drift.
func Drift(ctx context.Context, db *sql.DB, serverURL string, hcl []byte) ([]string, error) {
	drv, err := postgres.Open(db)
	if err != nil {
		return nil, err
	}
	live, err := drv.InspectSchema(ctx, "public", nil)
	if err != nil {
		return nil, fmt.Errorf("inspect live schema: %w", err)
	}
	var stmts []string
	err = withDesired(ctx, serverURL, hcl, func(_ migrate.Driver, want *schema.Schema) error {
		want.Name = live.Name
		changes, err := drv.SchemaDiff(live, want)
		if err != nil {
			return fmt.Errorf("diff live schema against schema.hcl: %w", err)
		}
		if len(changes) == 0 {
			return nil
		}
		plan, err := drv.PlanChanges(ctx, "drift", changes)
		if err != nil {
			return err
		}
		for _, c := range plan.Changes {
			stmts = append(stmts, strings.TrimSpace(c.Cmd))
		}
		return nil
	})
	return stmts, err
}
