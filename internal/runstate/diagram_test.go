package runstate_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/etlexec/etlexec/internal/runstate"
)

// diagram reads the mermaid state diagram that follows heading in docs/state-machine.md: the
// statuses entered from [*] and the edges between statuses (labels and edges into [*] dropped),
// each once, as "FROM → TO".
func diagram(t *testing.T, doc, heading string) (starts []runstate.Status, edges []string) {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/state-machine.md has no heading %q", heading)
	}
	_, rest, ok = strings.Cut(rest, "```mermaid\n")
	if !ok {
		t.Fatalf("no mermaid diagram under %q", heading)
	}
	block, _, _ := strings.Cut(rest, "```")
	for _, line := range strings.Split(block, "\n") {
		edge, _, _ := strings.Cut(strings.TrimSpace(line), ":")
		from, to, ok := strings.Cut(edge, "-->")
		if !ok {
			continue
		}
		from, to = strings.TrimSpace(from), strings.TrimSpace(to)
		switch {
		case to == "[*]":
		case from == "[*]":
			starts = append(starts, runstate.Status(to))
		default:
			edges = append(edges, runstate.Transition{From: runstate.Status(from), To: runstate.Status(to)}.String())
		}
	}
	slices.Sort(starts)
	slices.Sort(edges)
	return slices.Compact(starts), slices.Compact(edges)
}

// TestDiagramsMatchMachines keeps the state diagrams in docs/state-machine.md true: each lists
// exactly its machine's starts and edges.
func TestDiagramsMatchMachines(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../docs/state-machine.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		heading string
		m       runstate.Machine
	}{{"## Item", runstate.Items}, {"## Run", runstate.Runs}} {
		starts, edges := diagram(t, string(raw), tc.heading)
		var want []string
		for _, tr := range tc.m.Transitions() {
			want = append(want, tr.String())
		}
		slices.Sort(want)
		if diff := cmp.Diff(tc.m.Starts(), starts); diff != "" {
			t.Errorf("%s: statuses entered from [*] differ from Starts() (-want +got):\n%s", tc.heading, diff)
		}
		if diff := cmp.Diff(want, edges); diff != "" {
			t.Errorf("%s: diagram edges differ from Transitions() (-want +got):\n%s", tc.heading, diff)
		}
	}
}
