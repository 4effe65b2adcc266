/* units.c: see units.h. */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "units.h"

/* Leading digits of s as an unsigned number; *end is set past them. */
static int
parse_number (const char *s, uint64_t *n, const char **end, const char **why)
{
  char *e;

  while (isspace ((unsigned char) *s))
    s++;
  if (!isdigit ((unsigned char) *s)) {
    *why = *s ? "not a number" : "empty value";
    return -1;
  }
  errno = 0;
  *n = strtoull (s, &e, 10);
  if (errno == ERANGE) {
    *why = "number too large";
    return -1;
  }
  *end = e;
  return 0;
}

static int
mul_ok (uint64_t n, uint64_t m, uint64_t *r, const char **why)
{
  if (m && n > UINT64_MAX / m) {
    *why = "value too large";
    return -1;
  }
  *r = n * m;
  return 0;
}

int
units_parse_size (const char *s, uint64_t *bytes, const char **why)
{
  static const char binary[] = "kmgtpe";
  uint64_t n, mult = 1;
  const char *p;
  const char *k;

  if (parse_number (s, &n, &p, why) == -1)
    return -1;
  if (*p) {
    int c = tolower ((unsigned char) *p);
    if (c == 's') {
      mult = 512;
      p++;
    }
    else if ((k = strchr (binary, c)) != NULL && c) {
      int i, shift = (int) (k - binary + 1) * 10;
      for (i = 0; i < shift; i += 10)
        mult *= 1024;
      p++;
      if (strcasecmp (p, "ib") == 0 || strcasecmp (p, "b") == 0)
        p += strlen (p);
    }
    else if (c == 'b' && p[1] == '\0')
      p++;
  }
  if (*p) {
    *why = "unknown size suffix (use s, k, m, g, t, p or e)";
    return -1;
  }
  return mul_ok (n, mult, bytes, why);
}

int
units_parse_time (const char *s, uint64_t *ms, const char **why)
{
  uint64_t n, mult = 1000;
  const char *p;

  if (parse_number (s, &n, &p, why) == -1)
    return -1;
  if (strcasecmp (p, "ms") == 0)
    mult = 1;
  else if (*p == '\0' || strcasecmp (p, "s") == 0)
    mult = 1000;
  else if (strcasecmp (p, "m") == 0)
    mult = 60 * 1000;
  else if (strcasecmp (p, "h") == 0)
    mult = 3600 * 1000;
  else if (strcasecmp (p, "d") == 0)
    mult = 86400 * 1000;
  else {
    *why = "unknown time suffix (use ms, s, m, h or d)";
    return -1;
  }
  return mul_ok (n, mult, ms, why);
}

const char *
units_format_size (uint64_t bytes, char *buf, unsigned len)
{
  static const char sfx[] = "KMGTPE";
  double v = (double) bytes;
  int i = -1;

  while (v >= 1024 && i < 5) {
    v /= 1024;
    i++;
  }
  if (i < 0)
    snprintf (buf, len, "%" PRIu64, bytes);
  else if (v == (double) (uint64_t) v)
    snprintf (buf, len, "%" PRIu64 "%c", (uint64_t) v, sfx[i]);
  else
    snprintf (buf, len, "%.1f%c", v, sfx[i]);
  return buf;
}

static uint64_t
clock_ns (clockid_t clk)
{
  struct timespec ts;
  clock_gettime (clk, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

uint64_t
mono_ns (void)
{
  return clock_ns (CLOCK_MONOTONIC);
}

uint64_t
wall_ns (void)
{
  return clock_ns (CLOCK_REALTIME);
}

struct timespec
deadline_ts (uint64_t now, uint64_t ms)
{
  struct timespec ts = { .tv_sec = (time_t) (now / 1000000000u + ms / 1000),
                         .tv_nsec = (long) (now % 1000000000u + (ms % 1000) * 1000000u) };
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  return ts;
}
