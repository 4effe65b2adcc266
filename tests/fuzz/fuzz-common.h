/* fuzz-common.h: helpers shared by the libFuzzer harnesses in tests/fuzz.
 *
 * Everything here is static (each harness is one translation unit plus the
 * src/ files it tests):
 *   - fz_in: reads integers from the fuzzer's bytes (0 once exhausted), so
 *     every input, however short, describes a complete test case;
 *   - fz_crc32c: an independent, table-driven CRC-32C used as the reference
 *     for the checksums of the log and the dirty-log files;
 *   - a report sink (src/report.h) that counts errors and warnings instead
 *     of printing them, to check "one error message per failure";
 *   - FZ_CHECK: an invariant check.  A violation prints the invariant's id
 *     and aborts (libFuzzer then saves the input as a crash).  Ids listed in
 *     the environment variable NBDR_FUZZ_ALLOW (comma separated) are only
 *     counted, so that a known, reported finding does not stop a long run
 *     from looking for others;
 *   - fz_workdir: a private scratch directory (tmpfs when available, so
 *     fdatasync costs nothing), removed at exit.
 */
#ifndef NBDR_FUZZ_COMMON_H
#define NBDR_FUZZ_COMMON_H

#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report.h"

#define FZ_UNUSED __attribute__ ((unused))

/* ---- input reader ------------------------------------------------------ */

struct fz_in {
  const uint8_t *p;
  size_t n;
};

static inline uint64_t
fz_take (struct fz_in *in, unsigned bytes)
{
  uint64_t v = 0;
  unsigned i;
  for (i = 0; i < bytes; i++) {
    uint64_t b = 0;
    if (in->n) {
      b = *in->p++;
      in->n--;
    }
    v |= b << (8 * i);                  /* little-endian */
  }
  return v;
}

static inline uint8_t fz_u8 (struct fz_in *in) { return (uint8_t) fz_take (in, 1); }
static inline uint16_t fz_u16 (struct fz_in *in) { return (uint16_t) fz_take (in, 2); }
static inline uint32_t fz_u32 (struct fz_in *in) { return (uint32_t) fz_take (in, 4); }
static inline uint64_t fz_u64 (struct fz_in *in) { return fz_take (in, 8); }

/* ---- reference CRC-32C (reflected polynomial 0x82F63B78) ---------------- */

/* Slicing-by-8 tables, so the reference is not the harness's bottleneck;
 * not instrumented (it is the harness's own code, not under test). */
static uint32_t fz_crc_tab[8][256];

#define FZ_NOINSTR __attribute__ ((no_sanitize ("address", "undefined")))

static FZ_UNUSED FZ_NOINSTR uint32_t
fz_crc32c (uint32_t crc, const void *buf, size_t len)
{
  const uint8_t *p = buf;
  if (!fz_crc_tab[0][1]) {
    uint32_t i, j, c;
    for (i = 0; i < 256; i++) {
      c = i;
      for (j = 0; j < 8; j++)
        c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0);
      fz_crc_tab[0][i] = c;
    }
    for (i = 0; i < 256; i++)
      for (j = 1; j < 8; j++)
        fz_crc_tab[j][i] = (fz_crc_tab[j - 1][i] >> 8) ^ fz_crc_tab[0][fz_crc_tab[j - 1][i] & 0xff];
  }
  crc = ~crc;
  while (len >= 8) {
    uint32_t lo = crc ^ ((uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
                         (uint32_t) p[3] << 24);
    crc = fz_crc_tab[7][lo & 0xff] ^ fz_crc_tab[6][(lo >> 8) & 0xff] ^
      fz_crc_tab[5][(lo >> 16) & 0xff] ^ fz_crc_tab[4][lo >> 24] ^
      fz_crc_tab[3][p[4]] ^ fz_crc_tab[2][p[5]] ^ fz_crc_tab[1][p[6]] ^ fz_crc_tab[0][p[7]];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = fz_crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/* The standard check value of CRC-32C, split to cover both loops. */
static FZ_UNUSED void
fz_crc_selftest (void)
{
  uint32_t c = fz_crc32c (fz_crc32c (0, "123", 3), "456789", 6);
  if (c != 0xE3069283u || fz_crc32c (0, "123456789", 9) != 0xE3069283u) {
    fprintf (stderr, "fuzz: reference crc32c is broken\n");
    abort ();
  }
}

static inline uint32_t
fz_le32 (const void *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return v;
}

static inline uint64_t
fz_le64 (const void *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return v;
}

/* ---- invariants ----------------------------------------------------------- */

static unsigned long fz_allowed_hits;
static char fz_allowed_seen[256];

static void
fz_allowed_report (void)
{
  fprintf (stderr, "==FUZZ TOLERATED== %lu violation(s) of %s\n", fz_allowed_hits, fz_allowed_seen);
}

static FZ_UNUSED bool
fz_allowed (const char *id)
{
  const char *list = getenv ("NBDR_FUZZ_ALLOW");
  size_t n = strlen (id);

  while (list && *list) {
    const char *end = strchr (list, ',');
    size_t len = end ? (size_t) (end - list) : strlen (list);
    if (len == n && !memcmp (list, id, n))
      return true;
    list = end ? end + 1 : NULL;
  }
  return false;
}

static void fz_violation (const char *id, const char *file, int line, const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));

static FZ_UNUSED void
fz_violation (const char *id, const char *file, int line, const char *fmt, ...)
{
  va_list ap;

  if (fz_allowed (id)) {
    if (!fz_allowed_hits++)
      atexit (fz_allowed_report);
    if (!strstr (fz_allowed_seen, id) && strlen (fz_allowed_seen) + strlen (id) + 2 < sizeof fz_allowed_seen)
      snprintf (fz_allowed_seen + strlen (fz_allowed_seen), sizeof fz_allowed_seen - strlen (fz_allowed_seen),
                "%s%s", fz_allowed_seen[0] ? "," : "", id);
    return;
  }
  fprintf (stderr, "\n==FUZZ INVARIANT VIOLATED== [%s] %s:%d: ", id, file, line);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  fflush (stderr);
  abort ();
}

/* FZ_CHECK (id, condition, printf-format, ...) */
#define FZ_CHECK(id, cond, ...)                                   \
  do {                                                            \
    if (!(cond))                                                  \
      fz_violation ((id), __FILE__, __LINE__, __VA_ARGS__);       \
  } while (0)

/* ---- report sink ------------------------------------------------------------- */

struct fz_reports {
  unsigned errors;          /* error lines, warnings excluded */
  unsigned warnings;        /* "warning: " lines (rep_warn with a sink installed) */
  unsigned infos;
  char first_error[1024];
  char last_error[1024];
};

static struct fz_reports fz_rep;

static FZ_UNUSED void
fz_sink_error (const char *fmt, va_list ap)
{
  char buf[1024];
  vsnprintf (buf, sizeof buf, fmt, ap);
  if (!strncmp (buf, "warning: ", 9)) {
    fz_rep.warnings++;
    return;
  }
  if (!fz_rep.errors)
    snprintf (fz_rep.first_error, sizeof fz_rep.first_error, "%s", buf);
  snprintf (fz_rep.last_error, sizeof fz_rep.last_error, "%s", buf);
  fz_rep.errors++;
}

static FZ_UNUSED void
fz_sink_info (const char *fmt, va_list ap)
{
  (void) fmt;
  (void) ap;
  fz_rep.infos++;
}

static FZ_UNUSED void
fz_sink_debug (const char *fmt, va_list ap)
{
  (void) fmt;
  (void) ap;
}

static inline void
fz_reports_install (void)
{
  static const struct report_sink sink = {
    .error = fz_sink_error, .debug = fz_sink_debug, .info = fz_sink_info,
  };
  report_set_sink (&sink);
}

static inline void
fz_reports_reset (void)
{
  memset (&fz_rep, 0, sizeof fz_rep);
}

/* ---- scratch directory --------------------------------------------------------- */

static char fz_dir[512];

static FZ_UNUSED void
fz_workdir_remove (void)
{
  DIR *d;
  struct dirent *e;

  if (!fz_dir[0] || !(d = opendir (fz_dir)))
    return;
  while ((e = readdir (d)) != NULL) {
    char p[1024];
    if (!strcmp (e->d_name, ".") || !strcmp (e->d_name, ".."))
      continue;
    snprintf (p, sizeof p, "%s/%s", fz_dir, e->d_name);
    unlink (p);
  }
  closedir (d);
  rmdir (fz_dir);
  fz_dir[0] = 0;
}

/* A private directory: $NBDR_FUZZ_TMPDIR, else /dev/shm when writable,
 * else $TMPDIR, else /tmp.  Exits on failure (nothing can be tested). */
static FZ_UNUSED const char *
fz_workdir (void)
{
  const char *base = getenv ("NBDR_FUZZ_TMPDIR");

  if (fz_dir[0])
    return fz_dir;
  if (!base || !*base)
    base = access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv ("TMPDIR");
  if (!base || !*base)
    base = "/tmp";
  snprintf (fz_dir, sizeof fz_dir, "%s/nbdr-fuzz-XXXXXX", base);
  if (!mkdtemp (fz_dir)) {
    perror ("fuzz: mkdtemp");
    exit (1);
  }
  atexit (fz_workdir_remove);
  return fz_dir;
}

#endif
