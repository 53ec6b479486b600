// Package etl is the software development kit for job authors: it owns everything a
// handler sees and nothing the executor does with it.
//
// A team adds a kind of job by writing a [HandlerFunc] and registering it in a
// [Registry]. For every item of a run the executor builds an [Item] with [NewItem]
// and calls the handler once per attempt. The item carries the identifiers of the
// run (for logs), the item's parameters and the job's configuration (decoded with
// [Item.Params] and [Item.Config]), the incremental [Window] to load, a logger
// already tagged with job_id, run_id, attempt_id and item_no, and the target
// transaction. The handler reports what it did through the recorders
// ([Item.AddRead], [Item.AddWritten], [Item.AddPages], [Item.ObserveWatermark]).
//
// A handler returns nil on success. On failure it returns an error that the
// executor classifies with [Classify] into a [Category] (API, DB, DATA, SYSTEM);
// the category decides whether the item is retried. Handlers mark errors whose
// category is not obvious from their type with [APIError], [DBError], [DataError]
// or [SystemError], honour a server's Retry-After with [RetryAfter] or
// [HTTPStatus], and stop retries with [Permanent].
//
// Handlers must be safe to run twice: an attempt can be abandoned (worker shutdown,
// lost lease) and run again. Write to the target only through [Item.Target], the
// transaction in which the executor also records the item's result and cursor, so
// rows and progress commit or roll back together. In a dry run the executor rolls
// that transaction back; handlers need not check [Item.DryRun] unless they have side
// effects outside it.
//
// This package imports only the standard library, pgx, zerolog and uuid, so built-in
// kinds and a team's own kinds depend on exactly the same surface.
package etl
