/* units.h: size and time values with the dm-replicator suffixes, and the clocks.
 *
 * Sizes: a decimal number with an optional case-insensitive suffix:
 *   (none) bytes, s = 512-byte sectors, k m g t p e = binary (k = 1024).
 *   A trailing "b" or "ib" is accepted after k..e ("64KiB", "1GB" = binary).
 * Times: a number with an optional suffix: ms, s (default), m, h, d.
 * Both reject negative numbers, overflow, empty strings and trailing junk.
 */
#ifndef REPLICATOR_UNITS_H
#define REPLICATOR_UNITS_H

#include <stdint.h>
#include <time.h>

/* Parse a size in bytes.  0 on success; -1 with *why set to a static reason. */
int units_parse_size (const char *s, uint64_t *bytes, const char **why);
/* Parse a duration in milliseconds.  0 on success; -1 with *why set. */
int units_parse_time (const char *s, uint64_t *ms, const char **why);
/* Format a byte count as a short human string ("64M", "1.5G") into buf. */
const char *units_format_size (uint64_t bytes, char *buf, unsigned len);

/* The clocks, in nanoseconds: the one place that reads them.  mono_ns
 * (CLOCK_MONOTONIC) for intervals, deadlines and ages; wall_ns
 * (CLOCK_REALTIME) for times stored in the log or shown, and for deadlines of
 * condition variables that keep the default clock. */
uint64_t mono_ns (void);
uint64_t wall_ns (void);
/* The moment MS milliseconds after NOW (nanoseconds on one of the clocks
 * above) as a timespec: a deadline for pthread_cond_timedwait. */
struct timespec deadline_ts (uint64_t now, uint64_t ms);

#endif
