package dbmigrate

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/postgres"
	"ariga.io/atlas/sql/schema"
	"ariga.io/atlas/sql/sqlclient"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	etlschema "github.com/etlexec/etlexec/internal/schema"
)

// ErrNoChanges is returned by Plan when the directory already reaches schema.hcl.
var ErrNoChanges = errors.New("migration directory is in sync with schema.hcl")

func init() {
	// Atlas's URL opener (which binds a driver to the search_path schema, as the CLI's
	// --dev-url does) opens database/sql driver "postgres"; serve it with pgx.
	registerPostgresDriver()
}

func registerPostgresDriver() {
	for _, d := range sql.Drivers() {
		if d == "postgres" {
			return
		}
	}
	sql.Register("postgres", stdlib.GetDefaultDriver())
}

func jsonMarshal(v []string) (any, error) {
	if len(v) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func jsonUnmarshal(s string, v *[]string) error {
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return err
	}
	if len(*v) == 0 {
		*v = nil
	}
	return nil
}

// Desired parses schema.hcl (embedded unless hcl is given) into an Atlas realm.
func Desired(hcl []byte) (*schema.Realm, error) {
	if hcl == nil {
		hcl = etlschema.HCL
	}
	var r schema.Realm
	if err := postgres.EvalHCLBytes(hcl, &r, nil); err != nil {
		return nil, fmt.Errorf("evaluate schema.hcl: %w", err)
	}
	if len(r.Schemas) != 1 {
		return nil, fmt.Errorf("schema.hcl: want exactly one schema, found %d", len(r.Schemas))
	}
	return &r, nil
}

// DevDatabase creates an empty scratch database on the server behind serverURL, calls fn with a
// URL bound to its public schema, and drops it afterwards. It plays the CLI's --dev-url.
func DevDatabase(ctx context.Context, serverURL string, fn func(devURL string) error) (err error) {
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("connect for dev database: %w", err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	name := "etlexec_dev_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create dev database %s: %w", name, err)
	}
	defer func() {
		if _, derr := admin.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); derr != nil {
			err = errors.Join(err, fmt.Errorf("drop dev database %s: %w", name, derr))
		}
	}()
	u, err := url.Parse(serverURL)
	if err != nil {
		return fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + name
	q := u.Query()
	q.Set("search_path", "public")
	u.RawQuery = q.Encode()
	return fn(u.String())
}

func openDev(ctx context.Context, devURL string) (*sqlclient.Client, error) {
	c, err := sqlclient.Open(ctx, devURL)
	if err != nil {
		return nil, fmt.Errorf("open dev database: %w", err)
	}
	return c, nil
}

// normalize runs the desired schema through the dev database so that expressions compare in
// Postgres's canonical form (e.g. `'x'::text`), as the CLI does with --dev-url.
func normalize(ctx context.Context, dev migrate.Driver, desired *schema.Realm) (*schema.Schema, error) {
	n, ok := dev.(schema.Normalizer)
	if !ok {
		return nil, fmt.Errorf("atlas driver %T cannot normalize", dev)
	}
	s, err := n.NormalizeSchema(ctx, desired.Schemas[0])
	if err != nil {
		return nil, fmt.Errorf("normalize schema.hcl: %w", err)
	}
	return s, nil
}

// withDesired parses schema.hcl (embedded unless hcl is given), normalizes it through a scratch
// dev database on serverURL's server, and calls fn with that dev driver and the result.
func withDesired(ctx context.Context, serverURL string, hcl []byte, fn func(dev migrate.Driver, want *schema.Schema) error) error {
	desired, err := Desired(hcl)
	if err != nil {
		return err
	}
	return DevDatabase(ctx, serverURL, func(devURL string) error {
		dev, err := openDev(ctx, devURL)
		if err != nil {
			return err
		}
		defer dev.Close()
		want, err := normalize(ctx, dev.Driver, desired)
		if err != nil {
			return err
		}
		return fn(dev.Driver, want)
	})
}

// Plan writes the next migration file named name into dir (with atlas.sum re-hashed): it replays
// dir into a dev database, normalizes schema.hcl through it, and diffs. It returns the new file
// name, or ErrNoChanges.
func Plan(ctx context.Context, serverURL string, dir migrate.Dir, name string, hcl []byte) (file string, err error) {
	err = withDesired(ctx, serverURL, hcl, func(dev migrate.Driver, want *schema.Schema) error {
		pl := migrate.NewPlanner(dev, dir, migrate.PlanWithIndent("  "))
		plan, err := pl.PlanSchema(ctx, name, migrate.Realm(schema.NewRealm(want)))
		if errors.Is(err, migrate.ErrNoPlan) {
			return ErrNoChanges
		}
		if err != nil {
			return fmt.Errorf("plan migration %q: %w", name, err)
		}
		before, _ := dir.Files()
		if err := pl.WritePlan(plan); err != nil {
			return fmt.Errorf("write migration %q: %w", name, err)
		}
		after, _ := dir.Files()
		file = newest(before, after)
		return nil
	})
	return file, err
}

func newest(before, after []migrate.File) string {
	seen := make(map[string]bool, len(before))
	for _, f := range before {
		seen[f.Name()] = true
	}
	for _, f := range after {
		if !seen[f.Name()] {
			return f.Name()
		}
	}
	return ""
}

// Rehash rewrites atlas.sum for dir, as `atlas migrate hash` does after a hand edit.
func Rehash(dir migrate.Dir) error {
	sum, err := dir.Checksum()
	if err != nil {
		return fmt.Errorf("hash migration directory: %w", err)
	}
	return migrate.WriteSumFile(dir, sum)
}
