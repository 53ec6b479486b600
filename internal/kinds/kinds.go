// Package kinds assembles the built-in job kinds into one registry for the worker.
package kinds

import (
	"github.com/etlexec/etlexec/etl"
	"github.com/etlexec/etlexec/internal/kinds/httpjson"
	"github.com/etlexec/etlexec/internal/kinds/sqlincremental"
	"github.com/etlexec/etlexec/internal/kinds/synthetic"
)

// Builtin returns a registry holding every built-in kind. A team's own kinds are
// registered on the returned registry the same way.
func Builtin() *etl.Registry {
	r := etl.NewRegistry()
	synthetic.Register(r)
	sqlincremental.Register(r)
	httpjson.Register(r)
	return r
}
