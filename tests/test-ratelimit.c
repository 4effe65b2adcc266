/* Unit test: the token bucket and the throughput meter (ratelimit.c), on
 * simulated time: the bounds the site's rate relies on (bytes granted over
 * t seconds at most burst + rate x t, and not far below rate x t for a
 * sender that always has something to send), waits that are exact, no
 * bytes lost to rounding, debt for a cost above the bucket, and the meter
 * over its window. */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "ratelimit.h"

#define NS 1000000000ull

static void
unlimited (void)
{
  struct ratelimit rl;
  uint64_t wait = 7;
  ratelimit_init (&rl, 0, 0, 0);
  assert (ratelimit_take (&rl, UINT64_MAX / 2, 0) == 0);
  assert (ratelimit_take (&rl, 1u << 30, 1) == 0);
  assert (ratelimit_ready (&rl, 2, &wait) && wait == 7);
}

/* Exact waits: a full bucket grants its burst at once, then one byte
 * takes 1/rate s. */
static void
waits (void)
{
  struct ratelimit rl;
  uint64_t w;

  assert (ratelimit_burst_for (1000000, 131072) == 250000);
  assert (ratelimit_burst_for (100000, 131072) == 131072);
  ratelimit_init (&rl, 1000000, 250000, 5 * NS);
  assert (ratelimit_take (&rl, 250000, 5 * NS) == 0);
  assert ((w = ratelimit_take (&rl, 1, 5 * NS)) == 1000);      /* 1 us per byte */
  assert ((w = ratelimit_take (&rl, 100000, 5 * NS)) == NS / 10);
  assert (ratelimit_take (&rl, 100000, 5 * NS + NS / 10 - 1) != 0);
  assert (ratelimit_take (&rl, 100000, 5 * NS + NS / 10) == 0);
  /* Never above the burst, however long idle. */
  assert (ratelimit_take (&rl, 250000, 1000 * NS) == 0);
  assert (ratelimit_take (&rl, 1, 1000 * NS) == 1000);
}

/* A cost above the bucket goes once the bucket is full, leaving debt. */
static void
debt (void)
{
  struct ratelimit rl;
  uint64_t w, t = 0;

  ratelimit_init (&rl, 1000000, 250000, t);
  assert (ratelimit_take (&rl, 1, t) == 0);                  /* not full now */
  assert ((w = ratelimit_take (&rl, 1 << 20, t)) == 1000);   /* until full again */
  t += w;
  assert (ratelimit_take (&rl, 1 << 20, t) == 0);
  w = ratelimit_take (&rl, 1, t);
  assert (w == (uint64_t) ((1 << 20) - 250000 + 1) * 1000);
  /* ready/charge: a cost known only after the start. */
  ratelimit_init (&rl, 1000000, 250000, 0);
  assert (ratelimit_ready (&rl, 0, &w));
  ratelimit_charge (&rl, 1 << 20);
  assert (!ratelimit_ready (&rl, 0, &w) && w == (uint64_t) ((1 << 20) - 250000 + 1) * 1000);
  assert (!ratelimit_ready (&rl, w - 1, &w));
  assert (ratelimit_ready (&rl, (uint64_t) ((1 << 20) - 250000 + 1) * 1000, &w));
}

/* A sender with always something to send, pieces of a given size, woken
 * exactly when told: over any prefix of t seconds it was granted at most
 * burst + rate x t, and at least rate x t - piece (it is never held back
 * more than the rate requires). */
static void
sender (uint64_t rate, uint64_t burst, uint64_t piece)
{
  struct ratelimit rl;
  uint64_t t = 0, granted = 0, w;

  ratelimit_init (&rl, rate, burst, 0);
  while (t < 10 * NS) {
    if ((w = ratelimit_take (&rl, piece, t)) == 0) {
      granted += piece;
      assert ((double) granted <= (double) burst + (double) rate * (double) t / NS + 1);
      continue;
    }
    t += w;
    assert ((double) granted + (double) piece + 1 >= (double) rate * (double) t / NS);
  }
}

/* Many small refills lose nothing to rounding. */
static void
rounding (void)
{
  struct ratelimit rl;
  uint64_t t, granted = 0;

  ratelimit_init (&rl, 1000000, 131072, 0);
  assert (ratelimit_take (&rl, 131072, 0) == 0);
  for (t = 37; t <= NS; t += 37)       /* 37 ns steps: 0.037 bytes each */
    if (ratelimit_take (&rl, 1, t) == 0)
      granted++;
  assert (granted >= 999999 && granted <= 1000000);
}

static void
meter (void)
{
  struct ratemeter m;
  uint64_t t, v = 0, r = 0;

  ratemeter_init (&m, 5 * NS, 0, 0);
  assert (ratemeter_update (&m, 0, 0) == 0);
  /* 1 MB/s for 1 s: the first window is shorter. */
  for (t = NS / 10; t <= NS; t += NS / 10) {
    v += 100000;
    r = ratemeter_update (&m, t, v);
  }
  assert (r >= 990000 && r <= 1010000);
  /* 2 MB/s from now on, updates every 100 ms: after a window the meter
   * shows 2 MB/s (only the new rate in its window). */
  for (; t <= 12 * NS; t += NS / 10) {
    v += 200000;
    r = ratemeter_update (&m, t, v);
  }
  assert (r >= 1980000 && r <= 2020000);
  /* Idle: 0 once a window has passed. */
  for (; t <= 19 * NS; t += NS / 10)
    r = ratemeter_update (&m, t, v);
  assert (r == 0);
  /* Irregular updates (every 0.9 s): still the rate. */
  for (; t <= 40 * NS; t += 9 * NS / 10) {
    v += 900000;
    r = ratemeter_update (&m, t, v);
  }
  assert (r >= 990000 && r <= 1010000);
}

int
main (void)
{
  unlimited ();
  waits ();
  debt ();
  sender (2000000, 500000, 262144 + 48);
  sender (1000, 131072, 65536 + 48);
  sender (125000000, 31250000, 1048576 + 48);
  sender (2000000, 500000, 48);                /* header-only requests */
  rounding ();
  meter ();
  printf ("ratelimit: bucket bounds, waits, debt, rounding and the meter hold\n");
  return 0;
}
