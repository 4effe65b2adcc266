/* Unit test: size and time suffixes (units.c). */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "units.h"

/* Rates: bits per second (decimal) or bytes per second (binary), nothing
 * that could be read either way. */
static void
rates (void)
{
  static const struct { const char *s; uint64_t v; } good[] = {
    { "0", 0 }, { "none", 0 }, { "unlimited", 0 }, { "0Mbit", 0 },
    { "100Mbit", 12500000 }, { "100mbit/s", 12500000 }, { "1Gbit", 125000000 },
    { "1.5Gbit", 187500000 }, { "800kbit", 100000 }, { "16Mbit", 2000000 }, { "2Tbit", 250000000000 },
    { "8000bit", 1000 }, { "2M/s", 2u << 20 }, { "2MB/s", 2u << 20 }, { "2MiB/s", 2u << 20 },
    { "64K/s", 65536 }, { "64kB/s", 65536 }, { "1000B/s", 1000 }, { "1G/s", 1u << 30 },
    { "0.5M/s", 1u << 19 }, { " 12MB/s", 12u << 20 },
  };
  static const char *const bad[] = {
    "", "-1", "-5Mbit", "fast", "10Q", "100M", "1000", "100MB", "100Mb/s", "100mb/s", "100Mbps",
    "100MBps", "1Ebit", "1.Mbit", ".5M/s", "1..5M/s", "7bit", "999B/s", "100 Mbit", "1Mbitx",
    "99999999999999999999Mbit", "100K/sec", "1.0000000001M/s", NULL
  };
  const char *why;
  char buf[64];
  uint64_t v;
  size_t i;

  for (i = 0; i < sizeof good / sizeof good[0]; i++) {
    why = NULL;
    if (units_parse_rate (good[i].s, &v, &why) != 0 || v != good[i].v) {
      fprintf (stderr, "rate '%s': got %" PRIu64 " (%s), want %" PRIu64 "\n", good[i].s, v,
               why ? why : "ok", good[i].v);
      exit (1);
    }
  }
  for (i = 0; bad[i]; i++) {
    why = NULL;
    if (units_parse_rate (bad[i], &v, &why) == 0 || !why || !*why) {
      fprintf (stderr, "rate '%s' accepted (%" PRIu64 ")\n", bad[i], v);
      exit (1);
    }
  }
  units_parse_rate ("100Mb/s", &v, &why);
  assert (strstr (why, "ambiguous"));
  units_parse_rate ("100M", &v, &why);
  assert (strstr (why, "bits or bytes"));
  units_parse_rate ("-1", &v, &why);
  assert (strstr (why, "negative"));
  units_format_rate (0, buf, sizeof buf);
  assert (!strcmp (buf, "unlimited"));
  units_format_rate (2000000, buf, sizeof buf);
  assert (!strcmp (buf, "1.9 MiB/s (16.0 Mbit/s)"));
  units_format_rate (500, buf, sizeof buf);
  assert (!strcmp (buf, "500 B/s (4.0 kbit/s)"));
}

int
main (void)
{
  static const struct { const char *s; uint64_t v; } sizes[] = {
    { "0", 0 }, { "4096", 4096 }, { "1s", 512 }, { "8S", 4096 }, { "1k", 1024 },
    { "64K", 65536 }, { "1m", 1u << 20 }, { "200M", 200ull << 20 }, { "1g", 1ull << 30 },
    { "2T", 2ull << 40 }, { "1p", 1ull << 50 }, { "1e", 1ull << 60 }, { "64KiB", 65536 },
    { "1GB", 1ull << 30 }, { "512b", 512 }, { " 12k", 12288 },
  };
  static const char *bad_sizes[] = {
    "", "k", "-1", "1x", "1kk", "1.5G", "99999999999999999999", "16e", "1 k", "1kb2", NULL
  };
  static const struct { const char *s; uint64_t ms; } times[] = {
    { "0", 0 }, { "30", 30000 }, { "30s", 30000 }, { "5m", 300000 }, { "2h", 7200000 },
    { "1d", 86400000 }, { "250ms", 250 }, { "1S", 1000 }, { "3M", 180000 },
  };
  static const char *bad_times[] = { "", "s", "1x", "-5s", "1.5s", "5mm", "1w", NULL };
  const char *why;
  uint64_t v;
  char buf[32];
  size_t i;

  for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    why = NULL;
    if (units_parse_size (sizes[i].s, &v, &why) != 0 || v != sizes[i].v) {
      fprintf (stderr, "size '%s': got %" PRIu64 " (%s), want %" PRIu64 "\n",
               sizes[i].s, v, why ? why : "ok", sizes[i].v);
      return 1;
    }
  }
  for (i = 0; bad_sizes[i]; i++) {
    why = NULL;
    if (units_parse_size (bad_sizes[i], &v, &why) == 0 || !why || !*why) {
      fprintf (stderr, "size '%s' accepted\n", bad_sizes[i]);
      return 1;
    }
  }
  for (i = 0; i < sizeof times / sizeof times[0]; i++)
    if (units_parse_time (times[i].s, &v, &why) != 0 || v != times[i].ms) {
      fprintf (stderr, "time '%s': got %" PRIu64 " want %" PRIu64 "\n", times[i].s, v, times[i].ms);
      return 1;
    }
  for (i = 0; bad_times[i]; i++) {
    why = NULL;
    if (units_parse_time (bad_times[i], &v, &why) == 0 || !why) {
      fprintf (stderr, "time '%s' accepted\n", bad_times[i]);
      return 1;
    }
  }
  rates ();
  assert (!strcmp (units_format_size (65536, buf, sizeof buf), "64K"));
  assert (!strcmp (units_format_size (1536, buf, sizeof buf), "1.5K"));
  assert (!strcmp (units_format_size (100, buf, sizeof buf), "100"));
  printf ("units: %zu sizes, %zu times, bad inputs rejected\n",
          sizeof sizes / sizeof sizes[0], sizeof times / sizeof times[0]);
  return 0;
}
