package cli

import (
	"reflect"
	"testing"
	"time"

	"github.com/etlexec/etlexec/internal/config"
)

// sdkConfig carries every setting of the worker's environment and flags into the SDK's Config:
// with every field of config.Worker set, as many fields of the result are set.
func TestSDKConfigCarriesEveryField(t *testing.T) {
	t.Parallel()
	var w config.Worker
	leaves := 0
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		for i := range v.NumField() {
			f, sf := v.Field(i), v.Type().Field(i)
			switch {
			case sf.Anonymous && f.Kind() == reflect.Struct:
				fill(f)
				continue
			case f.Type() == reflect.TypeFor[time.Duration]():
				f.SetInt(int64(time.Second))
			case f.Kind() == reflect.String:
				f.SetString("x")
			case f.Kind() == reflect.Int:
				f.SetInt(1)
			case f.Kind() == reflect.Bool:
				f.SetBool(true)
			case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
				f.Set(reflect.ValueOf([]string{"x"}).Convert(f.Type()))
			default:
				t.Fatalf("config.Worker.%s: this test does not know %s; extend it and sdkConfig", sf.Name, f.Type())
			}
			leaves++
		}
	}
	fill(reflect.ValueOf(&w).Elem())
	got := reflect.ValueOf(sdkConfig(w))
	set := 0
	for i := range got.NumField() {
		if !got.Field(i).IsZero() {
			set++
		}
	}
	if set != leaves {
		t.Fatalf("sdkConfig set %d fields of etlexec.Config from the %d of config.Worker: %+v", set, leaves, got.Interface())
	}
}
