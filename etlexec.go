// Package etlexec embeds the schema's source of truth (schema.hcl) and the versioned
// migration directory so that every binary can plan, apply and check them without the
// source tree. Job authors import the etl package instead.
package etlexec

import "embed"

// SchemaHCL is the desired state of the Postgres schema in Atlas HCL.
//
//go:embed schema.hcl
var SchemaHCL []byte

// Migrations holds migrations/*.sql and migrations/atlas.sum in the Atlas directory format.
//
//go:embed migrations/*.sql migrations/atlas.sum
var Migrations embed.FS
