/* units.h: size and time values with the dm-replicator suffixes, and the clocks.
 *
 * Sizes: a decimal number with an optional case-insensitive suffix:
 *   (none) bytes, s = 512-byte sectors, k m g t p e = binary (k = 1024).
 *   A trailing "b" or "ib" is accepted after k..e ("64KiB", "1GB" = binary).
 * Times: a number with an optional suffix: ms, s (default), m, h, d.
 * Rates: a number (a decimal fraction allowed) with a unit that says bits
 * or bytes per second (units_parse_rate).
 * All three reject negative numbers, overflow, empty strings and trailing junk.
 */
#ifndef REPLICATOR_UNITS_H
#define REPLICATOR_UNITS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Parse a size in bytes.  0 on success; -1 with *why set to a static reason. */
int units_parse_size (const char *s, uint64_t *bytes, const char **why);
/* Parse a duration in milliseconds.  0 on success; -1 with *why set. */
int units_parse_time (const char *s, uint64_t *ms, const char **why);
/* A site's rate: bits per second ("100Mbit", "1.5Gbit", "800kbit/s":
 * decimal prefixes, as links are sold) or bytes per second ("12M/s",
 * "12MB/s", "12MiB/s": binary prefixes, as sizes), into bytes per second;
 * "0", "none" or "unlimited" is 0.  A number without a unit, "Mb/s",
 * "Mbps" and a size without "/s" are refused as ambiguous.  0, or -1 with
 * *why. */
int units_parse_rate (const char *s, uint64_t *bytes_per_s, const char **why);
/* "unlimited", or bytes/s with the bits/s beside: "1.9 MiB/s (16 Mbit/s)". */
void units_format_rate (uint64_t bytes_per_s, char *buf, size_t len);
/* Rates below this many bytes per second (8 kbit/s) are refused. */
#define UNITS_MIN_RATE 1000u
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
