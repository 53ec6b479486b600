package etl_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/etlexec/etlexec/etl"
)

func TestHandleDecodesParams(t *testing.T) {
	t.Parallel()
	type params struct {
		Region string `json:"region"`
	}
	var got params
	h := etl.Handle(func(_ context.Context, _ *etl.Item, p params) error { got = p; return nil })
	if err := h(context.Background(), etl.NewItem(etl.ItemSpec{Params: json.RawMessage(`{"region":"eu"}`)})); err != nil {
		t.Fatal(err)
	}
	if got.Region != "eu" {
		t.Fatalf("params = %+v, want region eu", got)
	}
	err := h(context.Background(), etl.NewItem(etl.ItemSpec{Params: json.RawMessage(`{"regoin":"eu"}`)}))
	if etl.Classify(err) != etl.CategoryData || !strings.Contains(err.Error(), "regoin") {
		t.Fatalf("a misspelt param = %v (%s), want a DATA error naming it", err, etl.Classify(err))
	}
}

func TestChainOrder(t *testing.T) {
	t.Parallel()
	var trace []string
	mw := func(name string) etl.Middleware {
		return func(next etl.HandlerFunc) etl.HandlerFunc {
			return func(ctx context.Context, it *etl.Item) error {
				trace = append(trace, name+">")
				err := next(ctx, it)
				trace = append(trace, "<"+name)
				return err
			}
		}
	}
	h := etl.Chain(func(context.Context, *etl.Item) error { trace = append(trace, "h"); return nil }, mw("a"), mw("b"))
	_ = h(context.Background(), etl.NewItem(etl.ItemSpec{}))
	if got, want := strings.Join(trace, " "), "a> b> h <b <a"; got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
}
