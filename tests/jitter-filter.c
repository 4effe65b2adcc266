/* jitter-filter.c: an nbdkit filter for tests that holds each write, zero and
 * trim for a random time (0 .. jitter-max microseconds, default 3000), so a
 * remote completes requests in an order other than the one they arrived in.
 * With a parallel plugin behind it, a snapshot of the remote taken at a
 * random moment (SIGSTOP) shows any write the sender let overtake an
 * earlier epoch: the crash torture uses it to check write-order fidelity.
 *
 *   nbdkit --filter=tests/.libs/nbdkit-jitter-filter.so file dir=D jitter-max=5000
 */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nbdkit-filter.h>

static unsigned jitter_max_us = 3000;

static int
jitter_config (nbdkit_next_config *next, nbdkit_backend *nxdata, const char *key, const char *value)
{
  if (strcmp (key, "jitter-max") == 0) {
    char *end;
    unsigned long v = strtoul (value, &end, 10);
    if (*value == '\0' || *end != '\0' || v > 10000000) {
      nbdkit_error ("jitter-max: a number of microseconds up to 10000000: %s", value);
      return -1;
    }
    jitter_max_us = (unsigned) v;
    return 0;
  }
  return next (nxdata, key, value);
}

static void
hold (void)
{
  static __thread unsigned seed;
  struct timespec ts;

  if (seed == 0) {
    clock_gettime (CLOCK_MONOTONIC, &ts);
    seed = (unsigned) ts.tv_nsec ^ (unsigned) (uintptr_t) &ts;
  }
  if (jitter_max_us)
    usleep ((useconds_t) (rand_r (&seed) % (jitter_max_us + 1)));
}

static int
jitter_pwrite (nbdkit_next *next, void *handle, const void *buf, uint32_t count,
               uint64_t offset, uint32_t flags, int *err)
{
  hold ();
  return next->pwrite (next, buf, count, offset, flags, err);
}

static int
jitter_zero (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  hold ();
  return next->zero (next, count, offset, flags, err);
}

static int
jitter_trim (nbdkit_next *next, void *handle, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  hold ();
  return next->trim (next, count, offset, flags, err);
}

static struct nbdkit_filter filter = {
  .name = "jitter",
  .longname = "nbd-replicator test filter: random request delays",
  .config = jitter_config,
  .config_help = "jitter-max=<MICROSECONDS>  longest hold of a write (default 3000)",
  .pwrite = jitter_pwrite,
  .zero = jitter_zero,
  .trim = jitter_trim,
};

NBDKIT_REGISTER_FILTER (filter)
