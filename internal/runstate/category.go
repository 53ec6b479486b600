package runstate

import (
	"slices"

	"github.com/etlexec/etlexec/etl"
)

// categoryTieOrder breaks ties in DominantCategory: the category an operator should
// look at first comes first. SYSTEM (often a bug in our code) outranks DB (our
// infrastructure), which outranks API (someone else's), which outranks DATA.
var categoryTieOrder = []etl.Category{etl.CategorySystem, etl.CategoryDB, etl.CategoryAPI, etl.CategoryData}

// DominantCategory is the error category recorded for a run: the most frequent
// category among its failed items, counts[category] being the number of failed items
// in it. Ties go to the category earlier in SYSTEM, DB, API, DATA; categories outside
// that list rank after it, by name. NONE and non-positive counts are ignored; with
// nothing left the result is NONE.
func DominantCategory(counts map[etl.Category]int) etl.Category {
	rank := func(c etl.Category) int {
		if i := slices.Index(categoryTieOrder, c); i >= 0 {
			return i
		}
		return len(categoryTieOrder)
	}
	best, bestN := etl.CategoryNone, 0
	for c, n := range counts {
		if c == etl.CategoryNone || n <= 0 {
			continue
		}
		switch {
		case n > bestN,
			n == bestN && rank(c) < rank(best),
			n == bestN && rank(c) == rank(best) && c < best:
			best, bestN = c, n
		}
	}
	return best
}
