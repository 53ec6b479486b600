package etl_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/etlexec/etlexec/etl"
)

// A team adds its own kind: decode the params, load the window, report what was done.
// The executor builds the Item; a unit test builds one with NewItem the same way.
func Example() {
	reg := etl.NewRegistry()
	reg.Register("orders_export", func(ctx context.Context, it *etl.Item) error {
		var p struct {
			Region string `json:"region"`
		}
		if err := it.Params(&p); err != nil {
			return err // already a DATA error: not retried
		}
		// ... fetch the rows of p.Region modified after it.Window().Start ...
		it.AddRead(120)
		it.AddWritten(118)
		it.AddPages(2)
		it.ObserveWatermark(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
		return nil
	})

	h, _ := reg.Lookup("orders_export")
	it := etl.NewItem(etl.ItemSpec{
		JobID:       "orders",
		Kind:        "orders_export",
		ItemAttempt: 1,
		MaxAttempts: 3,
		Params:      json.RawMessage(`{"region":"eu"}`),
		Strategy:    etl.StrategyModifiedDate,
	})
	if err := h(context.Background(), it); err != nil {
		fmt.Println("failed:", etl.Classify(err), err)
		return
	}
	m := it.Metrics()
	fmt.Println(reg.Kinds())
	fmt.Printf("read %d, written %d, pages %d, watermark %s\n",
		m.RecordsRead, m.RecordsWritten, m.Pages, m.Watermark.Format(time.RFC3339))
	// Output:
	// [orders_export]
	// read 120, written 118, pages 2, watermark 2026-03-01T12:00:00Z
}

// Handlers say what went wrong; the executor decides from the category whether to
// retry. Marks wrap the cause, so errors.Is still finds it.
func ExampleClassify() {
	errBadRow := errors.New("order 42 has no customer")

	errs := []error{
		etl.DataError(fmt.Errorf("transform: %w", errBadRow)),
		etl.HTTPStatus(503, 0, "upstream busy"),
		etl.HTTPStatus(404, 0, "no such region"),
		etl.RetryAfter(errors.New("rate limited"), 30*time.Second),
		etl.Permanent(etl.APIError(errors.New("account suspended"))),
		context.DeadlineExceeded,
	}
	for _, err := range errs {
		wait, _ := etl.RetryAfterOf(err)
		fmt.Printf("%-6s permanent=%-5t wait=%-3s %v\n", etl.Classify(err), etl.IsPermanent(err), wait, err)
	}
	fmt.Println(errors.Is(errs[0], errBadRow))
	// Output:
	// DATA   permanent=true  wait=0s  transform: order 42 has no customer
	// API    permanent=false wait=0s  http status 503: upstream busy
	// API    permanent=true  wait=0s  http status 404: no such region
	// API    permanent=false wait=30s rate limited
	// API    permanent=true  wait=0s  account suspended
	// SYSTEM permanent=false wait=0s  context deadline exceeded
	// true
}
