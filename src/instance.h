/* instance.h: one instance's lifecycle (instance.c), the top layer. */
#ifndef REPLICATOR_INSTANCE_H
#define REPLICATOR_INSTANCE_H

struct cfg;
struct replicator;

/* Open legs and the log, recover, rebuild the overlay.  NULL on error
 * (reported).  No threads yet.  Takes cfg (freed with the instance). */
struct replicator *replicator_new (struct cfg *cfg);
/* Start the syncer and the workers. */
int replicator_start (struct replicator *r);
/* Drain to the local legs for at most r->drain_ms, stop threads, write the
 * final header.  Correctness never depends on it. */
void replicator_stop (struct replicator *r);
void replicator_free (struct replicator *r);

#endif
