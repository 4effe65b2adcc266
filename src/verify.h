/* verify.h: compare a remote leg with the device while clients write
 * (verify.c; replctl verify). */
#ifndef REPLICATOR_VERIFY_H
#define REPLICATOR_VERIFY_H

#include <stdbool.h>
#include <stddef.h>

struct replicator;

/* Start a verify of device's leg at site (a thread of its own): 0, or -1
 * with a one-line reason in why. */
int replicator_verify (struct replicator *r, const char *device, unsigned site, bool mark,
                       char *why, size_t len);
/* Stop every verify and join its thread. */
void replicator_verify_stop (struct replicator *r);

#endif
