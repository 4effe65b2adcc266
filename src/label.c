/* label.c: leg labels: their geometry, their two copies on the leg, and
 * what a leg's label says about the leg compared with this instance.
 *
 * Owns: the on-disk label (struct label, byte table in label.h and in
 * nbd-replicator-replog(5)): the size of the end area and of the device a
 * leg holds, the checks a copy must pass, choosing the copy that counts,
 * reading and writing a label through a struct lbl_io, sealing it;
 * classifying a label against an instance's identity (enum lbl_class);
 * new UUIDs and generation ids, and how they are printed.
 * Invariants:
 *   - for every leg size and region size, lbl_dev_size_for_leg (leg) plus
 *     lbl_area_size of that device is at most leg: the device never
 *     reaches into its own label area;
 *   - copy (counter & 1) is the one a write with that counter goes to
 *     (0 = A at base, 1 = B at base + LBL_SIZE), and a copy read from the
 *     other slot does not count: a write never touches the copy that holds
 *     the newest valid label, so a torn write leaves the previous label
 *     readable;
 *   - a failed write leaves l->counter as it was, so that a retry goes to
 *     the same (already damaged) slot again, never to the good one;
 *   - nothing is written that would not read back as a valid copy;
 *   - every generation id stored is non-zero (0 means "none").
 * May call: utilities (crc32c, units for the wall clock, report for the
 * one warning when no random source works), libc (getrandom,
 * gethostname).  Nothing here knows legs, links or sites: the callers pass
 * an lbl_io and an offset.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "crc32c.h"
#include "io.h"
#include "label.h"
#include "report.h"
#include "units.h"

#if !defined (__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the label is stored as the host's struct: little-endian hosts only"
#endif

#define LBL_DEFAULT_REGION 65536u
#define LBL_PAGE 4096u

/* ---- geometry ------------------------------------------------------------ */

static uint64_t
align_up (uint64_t v, uint64_t a)
{
  return (v + a - 1) / a * a;
}

static uint64_t
align_down (uint64_t v, uint64_t a)
{
  return v / a * a;
}

uint64_t
lbl_bitmap_bytes (uint64_t dev_size, uint32_t region_size)
{
  uint64_t rs = region_size ? region_size : LBL_DEFAULT_REGION;
  uint64_t nbits = dev_size / rs + (dev_size % rs != 0);
  uint64_t bytes = nbits / 8 + (nbits % 8 != 0);

  return align_up (bytes, LBL_PAGE);
}

uint64_t
lbl_area_size (uint64_t dev_size, uint32_t region_size)
{
  return align_up (LBL_COPIES + lbl_bitmap_bytes (dev_size, region_size), LBL_AREA_ALIGN);
}

/* The area of the leg's own size is at least the area of any device that
 * fits in it (the area grows with the size), so dev + area (dev) <= leg. */
uint64_t
lbl_dev_size_for_leg (uint64_t leg_size, uint32_t region_size)
{
  uint64_t area = lbl_area_size (leg_size, region_size);

  if (leg_size < area || leg_size - area < LBL_AREA_ALIGN)
    return 0;
  return align_down (leg_size - area, LBL_AREA_ALIGN);
}

uint64_t
lbl_base_end (uint64_t leg_size)
{
  return leg_size >= LBL_COPIES ? leg_size - LBL_COPIES : 0;
}

/* ---- one copy -------------------------------------------------------------- */

static uint32_t
label_crc (const struct label *c)
{
  return crc32c (0, c, offsetof (struct label, crc));
}

static bool
geometry_valid (const struct label *c)
{
  if (c->bitmap_bytes % LBL_PAGE != 0)
    return false;
  if (c->bitmap_bytes != 0 && c->region_size == 0)
    return false;
  if (c->bitmap_offset > UINT64_MAX - c->bitmap_bytes)
    return false;
  if (c->area_size != 0) {
    /* An end label: the area holds both copies and the bitmap. */
    if (c->area_size % LBL_AREA_ALIGN != 0 || c->area_size < LBL_COPIES ||
        c->bitmap_bytes > c->area_size - LBL_COPIES)
      return false;
  }
  return true;
}

bool
lbl_copy_valid (const struct label *c)
{
  unsigned i;

  if (memcmp (c->magic, LBL_MAGIC, sizeof c->magic) != 0 ||
      c->version != LBL_VERSION || c->size != LBL_SIZE)
    return false;
  if (c->crc != label_crc (c))
    return false;
  /* A counter past 2^63 is never reached by writes; a copy claiming one
   * would win every comparison (and wrap). */
  if (c->nhist > LBL_HIST || c->gen == 0 || c->counter >= UINT64_C(1) << 63)
    return false;
  if (memchr (c->name, 0, sizeof c->name) == NULL ||
      memchr (c->writer, 0, sizeof c->writer) == NULL)
    return false;
  if (!geometry_valid (c))
    return false;
  for (i = 0; i < c->nhist; i++)
    if (c->hist[i].id == 0)
      return false;
  return true;
}

/* Copy `slot` (0 = A, 1 = B) counts when it is valid and sits where a
 * write of its counter puts it. */
static bool
slot_valid (const struct label *c, unsigned slot)
{
  return lbl_copy_valid (c) && (c->counter & 1) == slot;
}

/* other_bad is set when exactly one copy counts and the other was written
 * once: it holds something (a torn write, damage), or it is blank while
 * the valid copy's counter says the other slot was written before (a torn
 * write that left zeroes).  A label written only once (counter 1, slot B)
 * has a blank copy A: not bad. */
enum lbl_found
lbl_decode (const void *copies, struct label *out, bool *other_bad)
{
  struct label a, b;
  bool va, vb;

  memcpy (&a, copies, LBL_SIZE);
  memcpy (&b, (const uint8_t *) copies + LBL_SIZE, LBL_SIZE);
  va = slot_valid (&a, 0);
  vb = slot_valid (&b, 1);
  if (other_bad)
    *other_bad = va != vb &&
      (!io_all_zero (va ? (const uint8_t *) copies + LBL_SIZE : copies, LBL_SIZE) ||
       (va ? a.counter : b.counter) > 1);
  if (!va && !vb) {
    memset (out, 0, sizeof *out);
    return io_all_zero (copies, LBL_COPIES) ? LBL_BLANK : LBL_NONBLANK;
  }
  /* Both valid: counters differ in their low bit, so never tie. */
  if (va && (!vb || a.counter > b.counter))
    *out = a;
  else
    *out = b;
  return LBL_FOUND;
}

/* ---- reading and writing ----------------------------------------------------- */

int
lbl_read (const struct lbl_io *io, uint64_t base, struct label *out,
          enum lbl_found *found, bool *other_bad, char *err, size_t errlen)
{
  void *buf;
  int r;

  /* Aligned: the leg may be open with O_DIRECT. */
  r = posix_memalign (&buf, LBL_PAGE, LBL_COPIES);
  if (r != 0) {
    rep_fmt (err, errlen, "label read at offset %" PRIu64 ": %s", base, strerror (r));
    return -r;
  }
  r = io->pread (io->opaque, buf, LBL_COPIES, base);
  if (r < 0) {
    rep_fmt (err, errlen, "label read at offset %" PRIu64 ": %s", base, strerror (-r));
    free (buf);
    return r;
  }
  *found = lbl_decode (buf, out, other_bad);
  free (buf);
  return 0;
}

void
lbl_seal (struct label *l)
{
  l->crc = label_crc (l);
}

/* This host's name, truncated to fit with its NUL, NUL-padded ("" when
 * it has none). */
static void
set_writer (struct label *l)
{
  char host[256];

  memset (l->writer, 0, sizeof l->writer);
  if (gethostname (host, sizeof host) != 0)
    return;
  host[sizeof host - 1] = 0;
  memcpy (l->writer, host, strnlen (host, sizeof l->writer - 1));
}

/* The fields every copy carries, then sealed. */
static void
prepare (struct label *l)
{
  memcpy (l->magic, LBL_MAGIC, sizeof l->magic);
  l->version = LBL_VERSION;
  l->size = LBL_SIZE;
  l->counter++;
  l->written_ns = wall_ns ();
  set_writer (l);
  memset (l->reserved, 0, sizeof l->reserved);
  lbl_seal (l);
}

int
lbl_write (const struct lbl_io *io, uint64_t base, struct label *l,
           char *err, size_t errlen)
{
  uint64_t old_counter = l->counter, off;
  void *buf;
  int r;

  prepare (l);
  off = base + (l->counter & 1) * LBL_SIZE;
  if (!lbl_copy_valid (l)) {
    rep_fmt (err, errlen, "label write at offset %" PRIu64 ": the label is not valid "
             "(generation 0, unterminated name or history, or bad geometry)", off);
    r = -EINVAL;
    goto fail;
  }
  r = posix_memalign (&buf, LBL_PAGE, LBL_SIZE);
  if (r != 0) {
    rep_fmt (err, errlen, "label write at offset %" PRIu64 ": %s", off, strerror (r));
    r = -r;
    goto fail;
  }
  memcpy (buf, l, LBL_SIZE);
  r = io->pwrite (io->opaque, buf, LBL_SIZE, off);
  free (buf);
  if (r < 0) {
    rep_fmt (err, errlen, "label write at offset %" PRIu64 ": %s", off, strerror (-r));
    goto fail;
  }
  r = io->flush (io->opaque);
  if (r < 0) {
    rep_fmt (err, errlen, "label flush after the write at offset %" PRIu64 ": %s",
             off, strerror (-r));
    goto fail;
  }
  return 0;

 fail:
  /* A retry must go to the same slot, never over the good copy. */
  l->counter = old_counter;
  return r;
}

/* ---- identity ------------------------------------------------------------------- */

const char *
lbl_class_name (enum lbl_class c)
{
  switch (c) {
  case LC_NEW: return "new";
  case LC_NOT_BLANK: return "not-blank";
  case LC_FOREIGN: return "foreign";
  case LC_SAME: return "same";
  case LC_OLDER: return "older";
  case LC_NEWER: return "newer";
  case LC_SPLIT: return "split-brain";
  }
  return "unknown";
}

/* Index of generation id in hist[0..n), or -1 (id 0 is never found). */
static int
hist_find (const struct lbl_gen *hist, unsigned n, uint64_t id)
{
  unsigned i;

  if (id == 0)
    return -1;
  if (n > LBL_HIST)
    n = LBL_HIST;
  for (i = 0; i < n; i++)
    if (hist[i].id == id)
      return (int) i;
  return -1;
}

/* SPLIT: the newest generation of self's history (in its order) that the
 * label's history also holds, as self's history records it. */
static void
split_common (const struct lbl_self *self, const struct label *l, struct lbl_gen *common)
{
  unsigned i, n = self->nhist < LBL_HIST ? self->nhist : LBL_HIST;

  for (i = 0; i < n; i++)
    if (hist_find (l->hist, l->nhist, self->hist[i].id) >= 0) {
      *common = self->hist[i];
      return;
    }
}

enum lbl_class
lbl_classify (const struct lbl_self *self, enum lbl_found found,
              const struct label *l, struct lbl_gen *common)
{
  struct lbl_gen none = { 0, 0, 0 };
  int i;

  if (!common)
    common = &none;
  memset (common, 0, sizeof *common);
  if (found != LBL_FOUND)
    return found == LBL_BLANK ? LC_NEW : LC_NOT_BLANK;
  if (memcmp (l->group, self->group, sizeof l->group) != 0 ||
      memcmp (l->device, self->device, sizeof l->device) != 0)
    return LC_FOREIGN;
  if (l->gen == self->gen) {
    common->id = self->gen;             /* not ended: seq and time 0 */
    return LC_SAME;
  }
  i = hist_find (self->hist, self->nhist, l->gen);
  if (i >= 0) {
    *common = self->hist[i];
    return LC_OLDER;
  }
  i = hist_find (l->hist, l->nhist, self->gen);
  if (i >= 0) {
    *common = l->hist[i];
    return LC_NEWER;
  }
  split_common (self, l, common);
  return LC_SPLIT;
}

/* ---- random ids ----------------------------------------------------------------- */

/* Last resort when neither getrandom nor /dev/urandom works: mix the
 * clocks, the pid and a counter (unique, not secret). */
static void
weak_random (void *buf, size_t len)
{
  static uint64_t calls;
  uint8_t *p = buf;
  size_t i;

  for (i = 0; i < len; i += 8) {
    uint64_t z = wall_ns () ^ (mono_ns () << 17) ^ ((uint64_t) getpid () << 40) ^
      (__atomic_add_fetch (&calls, 1, __ATOMIC_RELAXED) * UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    memcpy (p + i, &z, len - i < 8 ? len - i : 8);
  }
}

static bool
urandom (void *buf, size_t len)
{
  int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
  size_t done = 0;

  if (fd == -1)
    return false;
  while (done < len) {
    ssize_t r = read (fd, (uint8_t *) buf + done, len - done);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    done += (size_t) r;
  }
  close (fd);
  return done == len;
}

static void
random_bytes (void *buf, size_t len)
{
  size_t done = 0;

  while (done < len) {
    ssize_t r = getrandom ((uint8_t *) buf + done, len - done, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    done += (size_t) r;
  }
  if (done == len || urandom (buf, len))
    return;
  rep_warn ("no random source (getrandom, /dev/urandom): label ids from the clocks");
  weak_random (buf, len);
}

void
lbl_uuid_new (uint8_t u[16])
{
  random_bytes (u, 16);
  u[6] = (uint8_t) ((u[6] & 0x0f) | 0x40);      /* version 4 */
  u[8] = (uint8_t) ((u[8] & 0x3f) | 0x80);      /* variant RFC 4122 */
}

uint64_t
lbl_gen_new (void)
{
  uint64_t g = 0;

  while (g == 0)
    random_bytes (&g, sizeof g);
  return g;
}

void
lbl_uuid_str (const uint8_t u[16], char buf[37])
{
  snprintf (buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
            "%02x%02x%02x%02x%02x%02x",
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7],
            u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

void
lbl_gen_str (uint64_t gen, char buf[17])
{
  snprintf (buf, 17, "%016" PRIx64, gen);
}

/* A self without a generation yet (gen 0) just gets one: 0 never enters
 * the history. */
void
lbl_self_new_gen (struct lbl_self *s, uint64_t end_seq, uint64_t end_ns)
{
  unsigned keep;

  if (s->nhist > LBL_HIST)
    s->nhist = LBL_HIST;
  if (s->gen != 0) {
    keep = s->nhist < LBL_HIST ? s->nhist : LBL_HIST - 1;
    memmove (&s->hist[1], &s->hist[0], keep * sizeof s->hist[0]);
    s->hist[0].id = s->gen;
    s->hist[0].end_seq = end_seq;
    s->hist[0].end_time_ns = end_ns;
    s->nhist = keep + 1;
  }
  s->gen = lbl_gen_new ();
}

void
lbl_set_self (struct label *l, const struct lbl_self *s)
{
  unsigned n = s->nhist < LBL_HIST ? s->nhist : LBL_HIST;

  memcpy (l->group, s->group, sizeof l->group);
  memcpy (l->device, s->device, sizeof l->device);
  l->gen = s->gen;
  l->nhist = n;
  memset (l->hist, 0, sizeof l->hist);
  memcpy (l->hist, s->hist, n * sizeof l->hist[0]);
}
