//go:build containers

package dbtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// With -tags containers, a test process that has no DATABASE_URL starts one postgres:15
// container on first use and every test in the process shares it (each test still gets its own
// cloned database). The container is removed by testcontainers' Ryuk reaper when the process
// exits; TerminateContainer stops it earlier, e.g. from a TestMain.

// containerImage is the Postgres image started when DATABASE_URL is unset.
const containerImage = "postgres:15"

var (
	ctrOnce sync.Once
	ctrURL  string
	ctr     testcontainers.Container

	ctrStopOnce sync.Once
)

// containerURL starts the shared container once and returns its URL, or "" when it could not be
// started (no Docker engine), in which case a one-line note goes to stderr and ServerURL falls
// back to DefaultURL.
func containerURL() string {
	ctrOnce.Do(func() {
		u, err := startPostgres()
		if err != nil {
			fmt.Fprintf(os.Stderr, "dbtest: no postgres container (%s); using %s\n", oneLine(err), DefaultURL)
			return
		}
		ctrURL = u
	})
	return ctrURL
}

func startPostgres() (u string, err error) {
	// testcontainers panics in some paths when no Docker host can be found.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // includes an image pull
	defer cancel()
	c, err := tcpostgres.Run(ctx, containerImage,
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.WithDatabase("test"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		if c != nil {
			_ = testcontainers.TerminateContainer(c)
		}
		return "", err
	}
	u, err = c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = testcontainers.TerminateContainer(c)
		return "", err
	}
	ctr = c
	return u, nil
}

// TerminateContainer stops the container started for this process, if any. It is optional:
// Ryuk removes the container when the process exits anyway.
func TerminateContainer() {
	ctrStopOnce.Do(func() {
		if ctr != nil {
			if err := testcontainers.TerminateContainer(ctr); err != nil {
				fmt.Fprintf(os.Stderr, "dbtest: terminate postgres container: %s\n", oneLine(err))
			}
		}
	})
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
