# etlexec developer targets. `make` (or `make help`) lists them.
#
# Targets that need Postgres and Redis evaluate the exports of scripts/services.sh in the same
# shell line: it reuses DATABASE_URL/REDIS_URL or the local defaults when they answer, and
# otherwise starts private instances in .dev/ (stop them with `make services-down`).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO ?= go
N ?= 20000
SCALE ?= small
ROWS ?= 200000
NAME ?=

# SERVICES brings the services up and exports DATABASE_URL and REDIS_URL into the recipe
# line's shell; the assignment keeps a failure of the script from being swallowed by eval.
SERVICES = exports="$$(scripts/services.sh up)" && eval "$$exports"

.PHONY: help
help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: N=$(N) (bench-pipeline, bench-scale), SCALE=$(SCALE) (bench-queries), ROWS=$(ROWS) (bench-kinds), NAME (migrate-diff)"

.PHONY: services
services: ## Make Postgres and Redis reachable and print their URLs as export lines
	@scripts/services.sh up

.PHONY: services-down
services-down: ## Stop the private Postgres/Redis that `make services` started in .dev/
	@scripts/services.sh down

.PHONY: build
build: ## Build all packages and put the binaries into bin/
	$(GO) build ./...
	$(GO) build -o bin/ ./cmd/...

.PHONY: test
# One package at a time (-p 1): packages share the server's max_connections (100 by default),
# and the fault suite alone runs several worker processes with their own pools.
test: verify ## make verify, then all tests against real Postgres and Redis (brings services up; Chromium for the console test), then test-deploy
	@scripts/browser.sh
	@$(SERVICES) && $(GO) test -count=1 -p 1 -timeout 15m ./...
	@$(MAKE) --no-print-directory test-deploy

.PHONY: test-deploy
# deploy/k8s is its own module (it alone needs k8s.io/api), so the root's ./... does not reach it.
test-deploy: ## Check the Kubernetes manifests offline (module deploy/k8s)
	cd deploy/k8s && $(GO) test -count=1 ./...

.PHONY: test-short
test-short: ## Run the tests in -short mode
	@$(SERVICES) && $(GO) test -count=1 -short -timeout 5m ./...

.PHONY: test-faults
# The fault tests start private Postgres and Redis servers of their own (internal/servertest):
# they need the binaries, not the shared services.
test-faults: ## Run the fault tests on private Postgres/Redis that get killed, frozen and restarted
	$(GO) test -count=1 -timeout 30m ./internal/servertest/... ./internal/faults/...

.PHONY: test-faults-loaded
test-faults-loaded: ## Run test-faults with two CPU-hog processes beside it
	$(GO) build -o bin/bench ./cmd/bench
	bin/bench hog -n 2 & hog=$$!; trap 'kill $$hog' EXIT; $(MAKE) test-faults

.PHONY: vet
vet: ## Run go vet (root module and deploy/k8s)
	$(GO) vet ./...
	cd deploy/k8s && $(GO) vet ./...

# TOOLS runs a tool pinned in tools/go.mod (staticcheck, sqlc): their dependencies stay out of
# the main go.mod. The first run builds them; cgo is off so sqlc uses its WebAssembly parser
# (about a minute cold) instead of compiling libpg_query in C (about nine), on every machine alike.
TOOLS = CGO_ENABLED=0 $(GO) tool -modfile=tools/go.mod

.PHONY: verify
# Static checks only: no services, no tests but the migration checksum one (which opens no
# database). .ci/run runs this before `make test`.
verify: ## Check formatting, vet, staticcheck, go.mod tidiness, generated sqlc code, internal/schema/migrations/atlas.sum
	@echo "gofmt -l"; out="$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go'))"; \
		if [ -n "$$out" ]; then echo "not gofmt-ed (run make fmt):"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags containers ./internal/...
	$(TOOLS) staticcheck ./...
	$(GO) mod tidy -diff
	cd tools && $(GO) mod tidy -diff
	$(TOOLS) sqlc diff -f internal/store/sqlc.yaml
	$(GO) test -count=1 -run '^TestAtlasSum$$/^(EmbeddedValidates|RepositoryValidatesAndMatchesEmbedded)$$' ./internal/dbmigrate

.PHONY: fmt
fmt: ## Format the Go code
	$(GO) fmt ./...

.PHONY: migrate
migrate: ## Apply pending migrations to DATABASE_URL
	@$(SERVICES) && $(GO) run ./cmd/enqueuer migrate

.PHONY: migrate-diff
migrate-diff: ## Generate the next migration in internal/schema/migrations from internal/schema/schema.hcl (NAME=what_changed)
	@if [ -z "$(NAME)" ]; then echo "usage: make migrate-diff NAME=what_changed" >&2; exit 2; fi
	@$(SERVICES) && $(GO) run ./cmd/enqueuer migrate diff $(NAME)

.PHONY: migrate-status
migrate-status: ## Show applied and pending migrations
	@$(SERVICES) && $(GO) run ./cmd/enqueuer migrate status

.PHONY: generate
generate: ## Regenerate the sqlc code in internal/store/sqlcdb
	$(TOOLS) sqlc generate -f internal/store/sqlc.yaml

.PHONY: demo
demo: ## Run the main job end to end: 2 workers, 50 params, resume from cursors, a dry run
	@bash scripts/demo.sh

.PHONY: bench-pipeline
bench-pipeline: ## Bare asynq vs etlexec worker processes (1, 2, 4) on private servers, N items: rates, per-item costs
	$(GO) run ./cmd/bench pipeline -n $(N)

.PHONY: bench-kinds
bench-kinds: ## Benchmark sql_incremental and http_json loads against a COPY | COPY pipe (ROWS=200000)
	@$(SERVICES) && $(GO) run ./cmd/bench kinds -rows $(ROWS)

.PHONY: bench-scale
bench-scale: ## One run of N items end to end on private servers: trigger, fan-out, RSS, Redis, WAL, items/s, finalise, reconciler pass, runs show
	$(GO) run ./cmd/bench scale -n $(N)

.PHONY: bench-queries
bench-queries: ## Benchmark the history queries at SCALE (small|medium|full)
	@$(SERVICES) && $(GO) run ./cmd/bench queries -scale $(SCALE)
