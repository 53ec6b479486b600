package etlexec

import "embed"

// The schema's source of truth and the versioned migration directory, embedded so that every
// binary can plan, apply and check them without the source tree (internal/dbmigrate and
// internal/dbtest read them). They are the only exports of this package that are not the
// worker SDK; they live here because go:embed cannot reach a parent directory and schema.hcl
// and migrations/ stay at the repository root, where Atlas, sqlc and the docs expect them.

// SchemaHCL is the desired state of the Postgres schema in Atlas HCL.
//
//go:embed schema.hcl
var SchemaHCL []byte

// Migrations holds migrations/*.sql and migrations/atlas.sum in the Atlas directory format.
//
//go:embed migrations/*.sql migrations/atlas.sum
var Migrations embed.FS
