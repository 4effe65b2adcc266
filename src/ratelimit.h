/* ratelimit.h: a token bucket (a limit on bytes per second) and a
 * throughput meter (bytes per second over a sliding window).  Pure
 * arithmetic on the times the caller passes (nanoseconds, mono_ns): no
 * clock, no lock, no sleep; the owner (a site's worker) holds them.
 *
 * The bucket holds at most `burst` bytes and fills at `rate` bytes/s.  A
 * sender takes the cost of what it sends; when the bucket lacks it the
 * sender is told how long to wait and does something else meanwhile (the
 * worker parks the request and sets its wake-up).  Bytes granted over any
 * interval of t seconds are at most burst + rate x t, plus the largest
 * single cost above burst (a cost larger than the bucket goes once the
 * bucket is full and leaves it in debt).  rate 0: no limit.
 */
#ifndef REPLICATOR_RATELIMIT_H
#define REPLICATOR_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ratelimit {
  uint64_t rate;                 /* bytes per second; 0 = unlimited */
  uint64_t burst;                /* bytes the bucket holds at most */
  int64_t level;                 /* bytes available (negative: in debt) */
  uint64_t last_ns;              /* the last refill */
  uint64_t carry;                /* ... and the part of a byte it left over,
                                    in byte-nanoseconds (< 1e9) */
};

/* The bucket's size for a rate: a quarter of a second of traffic, at
 * least min_burst. */
uint64_t ratelimit_burst_for (uint64_t rate, uint64_t min_burst);
/* A full bucket at now. */
void ratelimit_init (struct ratelimit *rl, uint64_t rate, uint64_t burst, uint64_t now);
/* Take cost bytes: 0 if granted (taken from the bucket), else the
 * nanoseconds (>= 1) until the bucket holds min(cost, burst). */
uint64_t ratelimit_take (struct ratelimit *rl, uint64_t cost, uint64_t now);
/* For a cost known only once started: true while the bucket is not in
 * debt (then the caller charges it); *wait_ns gets the time until it is
 * out of debt when false. */
bool ratelimit_ready (struct ratelimit *rl, uint64_t now, uint64_t *wait_ns);
void ratelimit_charge (struct ratelimit *rl, uint64_t cost);

/* Throughput over a sliding window: the counter's samples, at most one per
 * window / (RATEMETER_SAMPLES - 1); the rate is the counter's growth from
 * the oldest sample still inside the window to now. */
#define RATEMETER_SAMPLES 21
struct ratemeter {
  uint64_t window_ns;
  uint64_t t[RATEMETER_SAMPLES], v[RATEMETER_SAMPLES];
  unsigned first, n;             /* a ring: oldest at first */
};

void ratemeter_init (struct ratemeter *m, uint64_t window_ns, uint64_t now, uint64_t total);
/* Record the counter's value total at now; returns bytes per second over
 * the last window_ns at most (over less only during the first window). */
uint64_t ratemeter_update (struct ratemeter *m, uint64_t now, uint64_t total);

#endif
