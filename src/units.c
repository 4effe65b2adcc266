/* units.c: see units.h. */
#include <config.h>

#include <ctype.h>
#include <stdbool.h>
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

/* The number of a rate: digits, maybe a fraction (at most 9 digits),
 * times mult into *out.  -1 with *why. */
static int
rate_number (const char *s, const char **end, uint64_t mult, uint64_t *out, const char **why)
{
  unsigned __int128 ip = 0, fp = 0, scale = 1, v;
  const char *p = s;

  for (; isdigit ((unsigned char) *p); p++)
    if ((ip = ip * 10 + (unsigned) (*p - '0')) > UINT64_MAX) {
      *why = "number too large";
      return -1;
    }
  if (*p == '.') {
    for (p++; isdigit ((unsigned char) *p); p++) {
      if (scale >= 1000000000u) {
        *why = "too many decimals (at most 9)";
        return -1;
      }
      fp = fp * 10 + (unsigned) (*p - '0');
      scale *= 10;
    }
    if (scale == 1) {
      *why = "a decimal point needs digits after it";
      return -1;
    }
  }
  v = ip * mult + fp * mult / scale;
  if (v > UINT64_MAX) {
    *why = "value too large";
    return -1;
  }
  *out = (uint64_t) v;
  *end = p;
  return 0;
}

/* The unit of a rate (what follows the number): *bits, and the power of
 * the prefix (k/K 1, M 2, G 3, T 4, P 5, E 6).  -1 with *why. */
static int
rate_unit (const char *u, bool *bits, unsigned *power, const char **why)
{
  static const char prefixes[] = "kmgtpe";
  const char *k = *u ? strchr (prefixes, tolower ((unsigned char) *u)) : NULL;

  *power = 0;
  if (k) {
    *power = (unsigned) (k - prefixes) + 1;
    u++;
  }
  if (!strcasecmp (u, "bit") || !strcasecmp (u, "bit/s")) {
    *bits = true;
    if (*power > 4) {
      *why = "bit rates take k, M, G or T";
      return -1;
    }
    return 0;
  }
  *bits = false;
  if (!strcmp (u, "B/s") || (*power && (!strcmp (u, "/s") || !strcmp (u, "iB/s"))))
    return 0;
  if (!strcmp (u, "b/s") || !strcmp (u, "ib/s") || !strcasecmp (u, "bps") ||
      !strcasecmp (u, "ibps")) {
    *why = "ambiguous unit (bits or bytes?): write \"Mbit\" for bits or \"MB/s\" for bytes per second";
    return -1;
  }
  if (!*u || !strcmp (u, "B") || !strcmp (u, "iB") || !strcasecmp (u, "s")) {
    *why = "say whether it is bits or bytes per second: \"100Mbit\" (bits, decimal prefixes) "
      "or \"12MB/s\" (bytes, binary prefixes as in sizes)";
    return -1;
  }
  *why = "unknown unit (use kbit, Mbit, Gbit or Tbit for bits per second, "
    "K/s, M/s, G/s or T/s, with B or iB, for bytes per second)";
  return -1;
}

int
units_parse_rate (const char *s, uint64_t *bytes_per_s, const char **why)
{
  const char *p, *u;
  uint64_t mult = 1, v;
  unsigned power, i;
  bool bits;

  while (isspace ((unsigned char) *s))
    s++;
  if (!strcmp (s, "0") || !strcmp (s, "none") || !strcmp (s, "unlimited")) {
    *bytes_per_s = 0;
    return 0;
  }
  if (*s == '-') {
    *why = "a rate cannot be negative (0 means no limit)";
    return -1;
  }
  if (!isdigit ((unsigned char) *s)) {
    *why = *s ? "not a number: expected a rate like \"100Mbit\" or \"12MB/s\", or 0 for no limit"
              : "empty value";
    return -1;
  }
  for (p = s; isdigit ((unsigned char) *p) || *p == '.'; p++)
    ;
  if (rate_unit (p, &bits, &power, why) == -1)
    return -1;
  for (i = 0; i < power; i++)
    mult *= bits ? 1000 : 1024;
  if (rate_number (s, &u, mult, &v, why) == -1)
    return -1;
  if (u != p) {
    *why = "not a number";
    return -1;
  }
  if (bits)
    v /= 8;
  if (v < UNITS_MIN_RATE && strspn (s, "0.") < (size_t) (p - s)) {   /* not all zeroes */
    *why = "too low: at least 8kbit (1000 bytes per second), or 0 for no limit";
    return -1;
  }
  *bytes_per_s = v;
  return 0;
}

void
units_format_rate (uint64_t bytes_per_s, char *buf, size_t len)
{
  static const char *const bin[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  static const char *const dec[] = { "bit", "kbit", "Mbit", "Gbit", "Tbit", "Pbit", "Ebit" };
  double b = (double) bytes_per_s, bits = b * 8;
  unsigned i = 0, j = 0;

  if (!bytes_per_s) {
    snprintf (buf, len, "unlimited");
    return;
  }
  while (b >= 1024 && i < 6) {
    b /= 1024;
    i++;
  }
  while (bits >= 1000 && j < 6) {
    bits /= 1000;
    j++;
  }
  snprintf (buf, len, "%.*f %s/s (%.*f %s/s)", i ? 1 : 0, b, bin[i], j ? 1 : 0, bits, dec[j]);
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
