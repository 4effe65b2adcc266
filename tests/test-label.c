/* Unit test: leg labels (src/label.c).
 *   - geometry: bitmap and area sizes; for leg sizes from 2 MiB to 16 TiB
 *     and region sizes 4 KiB .. 16 MiB the device and its label area fit
 *     in the leg, and little is wasted;
 *   - a label written through an lbl_io over a file reads back equal;
 *   - writes alternate between the copies and the newest one wins;
 *   - a torn write (garbage or zeroes over the newest copy, a failed
 *     write) falls back to the older copy with other_bad, and the next
 *     write goes over the torn copy, never over the good one;
 *   - blank and non-blank areas, read, write and flush errors;
 *   - every single-byte flip of a copy is detected, and each validity
 *     rule refuses a copy whose checksum was recomputed;
 *   - classification: every case, history order, the oldest generation
 *     falling off a full history, split brain with and without a
 *     common generation;
 *   - UUIDs (format, RFC 4122 version 4 bits) and generation ids.
 */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "label.h"
#include "report.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)

static char path[] = "/tmp/test-label.XXXXXX";

/* ---- a file as an lbl_io, with injectable faults ---- */

struct fio {
  int fd;
  int fail_read, fail_write, fail_flush;   /* -errno to return, 0 none */
  bool torn;                               /* a failing write leaves garbage */
  unsigned writes, flushes;
};

static int
f_pread (void *opaque, void *buf, uint32_t len, uint64_t off)
{
  struct fio *f = opaque;
  if (f->fail_read)
    return f->fail_read;
  ssize_t r = pread (f->fd, buf, len, (off_t) off);
  if (r < 0)
    return -errno;
  if ((uint32_t) r < len)
    memset ((char *) buf + r, 0, len - (uint32_t) r);     /* past the end: zeroes */
  return 0;
}

static int
f_pwrite (void *opaque, const void *buf, uint32_t len, uint64_t off)
{
  struct fio *f = opaque;
  f->writes++;
  if (f->fail_write) {
    if (f->torn) {
      char junk[LBL_SIZE];
      memcpy (junk, buf, len / 2);
      memset (junk + len / 2, 0x5a, len - len / 2);
      assert (pwrite (f->fd, junk, len, (off_t) off) == (ssize_t) len);
    }
    return f->fail_write;
  }
  return pwrite (f->fd, buf, len, (off_t) off) == (ssize_t) len ? 0 : -EIO;
}

static int
f_flush (void *opaque)
{
  struct fio *f = opaque;
  f->flushes++;
  return f->fail_flush;
}

static struct fio fio;
static const struct lbl_io io = { &fio, f_pread, f_pwrite, f_flush };

static void
raw_read (void *buf, uint64_t off, size_t len)
{
  assert (pread (fio.fd, buf, len, (off_t) off) == (ssize_t) len);
}

static void
raw_write (const void *buf, uint64_t off, size_t len)
{
  assert (pwrite (fio.fd, buf, len, (off_t) off) == (ssize_t) len);
}

/* ---- helpers ---- */

static void
sample_self (struct lbl_self *s)
{
  unsigned i;
  memset (s, 0, sizeof *s);
  for (i = 0; i < 16; i++) {
    s->group[i] = (uint8_t) (0x10 + i);
    s->device[i] = (uint8_t) (0x80 + i);
  }
  s->gen = 0x3333;
  s->nhist = 2;
  s->hist[0] = (struct lbl_gen) { 0x2222, 200, 2000 };
  s->hist[1] = (struct lbl_gen) { 0x1111, 100, 1000 };
}

static void
sample_label (struct label *l, uint64_t leg)
{
  struct lbl_self s;
  uint64_t dev = lbl_dev_size_for_leg (leg, 65536);

  memset (l, 0, sizeof *l);
  sample_self (&s);
  lbl_set_self (l, &s);
  memcpy (l->magic, LBL_MAGIC, 8);
  l->version = LBL_VERSION;
  l->size = LBL_SIZE;
  snprintf (l->name, sizeof l->name, "db");
  l->dev_size = dev;
  l->area_size = lbl_area_size (dev, 65536);
  l->bitmap_bytes = lbl_bitmap_bytes (dev, 65536);
  l->bitmap_offset = leg - l->area_size;
  l->region_size = 65536;
  l->site = 1;
  l->flags = LBL_CONSISTENT | LBL_CLEAN;
  l->gen_start_ns = 42;
  l->cons_seq = 1234;
  l->cons_time_ns = 5678;
}

static uint64_t
copy_counter (const uint8_t *copies, unsigned slot)
{
  struct label c;
  memcpy (&c, copies + slot * LBL_SIZE, LBL_SIZE);
  return lbl_copy_valid (&c) ? c.counter : UINT64_MAX;
}

/* ---- geometry ---- */

static void
check_leg (uint64_t leg, uint32_t rs)
{
  uint64_t dev = lbl_dev_size_for_leg (leg, rs);
  uint64_t area;

  if (dev == 0) {
    assert (leg < lbl_area_size (leg, rs) + MiB);
    return;
  }
  area = lbl_area_size (dev, rs);
  assert (dev % LBL_AREA_ALIGN == 0 && dev >= MiB);
  assert (area % LBL_AREA_ALIGN == 0 && area >= LBL_COPIES + lbl_bitmap_bytes (dev, rs));
  assert (dev + area <= leg);
  assert (leg - dev - area < 2 * MiB);          /* little is wasted */
  assert (lbl_base_end (leg) == leg - LBL_COPIES && lbl_base_end (leg) >= dev);
}

static void
test_geometry (void)
{
  static const uint64_t odd[] = { 0, 1, 4095, 4096, 65535, 65536, MiB - 1, MiB + 1, 12345678 };
  uint64_t rnd = 0x9e3779b97f4a7c15, s, n = 0;
  uint32_t rs;
  unsigned i;

  assert (lbl_bitmap_bytes (0, 4096) == 0);
  assert (lbl_bitmap_bytes (1, 4096) == 4096);
  assert (lbl_bitmap_bytes (GiB, 0) == lbl_bitmap_bytes (GiB, 65536));
  assert (lbl_bitmap_bytes (4096ull * 8 * 4096, 4096) == 4096);
  assert (lbl_bitmap_bytes (4096ull * 8 * 4096 + 1, 4096) == 8192);
  assert (lbl_bitmap_bytes (16 * TiB, 4096) == 512 * MiB);
  assert (lbl_area_size (GiB, 65536) == MiB);
  assert (lbl_area_size (0, 65536) == MiB);
  assert (lbl_area_size (16 * TiB, 4096) == 513 * MiB);
  assert (lbl_dev_size_for_leg (2 * MiB, 65536) == MiB);
  assert (lbl_dev_size_for_leg (2 * MiB - 1, 65536) == 0);
  assert (lbl_dev_size_for_leg (0, 65536) == 0);
  assert (lbl_dev_size_for_leg (GiB, 65536) == GiB - MiB);
  assert (lbl_base_end (GiB) == GiB - 8192 && lbl_base_end (100) == 0);

  for (rs = 4096; rs <= 16 * MiB; rs *= 2) {
    for (i = 0; i < sizeof odd / sizeof odd[0]; i++) {
      uint64_t bits = odd[i] / rs + (odd[i] % rs != 0), b = lbl_bitmap_bytes (odd[i], rs);
      assert (b % 4096 == 0 && b * 8 >= bits && (b == 0 || (b - 4096) * 8 < bits));
    }
    for (s = 2 * MiB; s <= 16 * TiB; s *= 2) {
      static const int64_t delta[] = { -4097, -4096, -1, 0, 1, 4095, 4096, 512 * 1024 };
      for (i = 0; i < sizeof delta / sizeof delta[0]; i++, n++)
        check_leg (s + (uint64_t) delta[i], rs);
      check_leg (s + s / 2, rs);
    }
    for (i = 0; i < 3000; i++, n++) {
      rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
      check_leg (2 * MiB + rnd % (16 * TiB - 2 * MiB + 1), rs);
    }
    check_leg (rs * 3 + 7 * MiB, rs * 3);                  /* a region size not a power of 2 */
  }
  printf ("geometry: %" PRIu64 " leg sizes x 13 region sizes, device + area <= leg\n", n / 13);
}

/* ---- reading, writing, alternation ---- */

static void
test_roundtrip_and_alternation (void)
{
  const uint64_t leg = 64 * MiB, base = lbl_base_end (leg);
  struct label l, r;
  enum lbl_found found;
  bool other_bad;
  uint8_t copies[LBL_COPIES];
  char err[256] = "";
  uint64_t k;

  assert (ftruncate (fio.fd, (off_t) leg) == 0);
  assert (lbl_read (&io, base, &r, &found, &other_bad, err, sizeof err) == 0);
  assert (found == LBL_BLANK && !other_bad);

  sample_label (&l, leg);
  assert (lbl_write (&io, base, &l, err, sizeof err) == 0);
  assert (l.counter == 1 && fio.flushes == 1);
  assert (lbl_copy_valid (&l) && l.written_ns > 0 && memchr (l.writer, 0, sizeof l.writer));
  assert (lbl_read (&io, base, &r, &found, &other_bad, err, sizeof err) == 0);
  assert (found == LBL_FOUND && !other_bad);            /* copy A blank: never written yet */
  assert (memcmp (&r, &l, sizeof l) == 0);
  assert (r.cons_seq == 1234 && !strcmp (r.name, "db") && r.gen == 0x3333 && r.nhist == 2);

  for (k = 2; k <= 5; k++) {
    l.cons_seq = 1000 + k;
    assert (lbl_write (&io, base, &l, err, sizeof err) == 0 && l.counter == k);
    raw_read (copies, base, sizeof copies);
    assert (copy_counter (copies, k & 1) == k);        /* the new one where its counter says */
    assert (copy_counter (copies, !(k & 1)) == k - 1); /* the previous one untouched */
    assert (lbl_read (&io, base, &r, &found, &other_bad, err, sizeof err) == 0);
    assert (found == LBL_FOUND && !other_bad && r.counter == k && r.cons_seq == 1000 + k);
  }
  /* Nothing outside the two copies was written. */
  {
    static uint8_t below[LBL_SIZE];
    raw_read (below, base - LBL_SIZE, LBL_SIZE);
    for (k = 0; k < LBL_SIZE; k++)
      assert (below[k] == 0);
  }
  printf ("round trip and alternation: 5 writes, copies alternate, the newest wins\n");
}

/* With the label written 5 times (B newest, counter 5), damage B. */
static void
check_fallback (const char *what, const void *junk)
{
  const uint64_t base = lbl_base_end (64 * MiB);
  struct label r, l;
  enum lbl_found found;
  bool other_bad;
  uint8_t copies[LBL_COPIES];
  char err[256];

  raw_write (junk, base + LBL_SIZE, LBL_SIZE);
  assert (lbl_read (&io, base, &r, &found, &other_bad, err, sizeof err) == 0);
  assert (found == LBL_FOUND && other_bad && r.counter == 4);
  /* The next write goes over the torn copy B, and A stays as it was. */
  l = r;
  assert (lbl_write (&io, base, &l, err, sizeof err) == 0 && l.counter == 5);
  raw_read (copies, base, sizeof copies);
  assert (copy_counter (copies, 0) == 4 && copy_counter (copies, 1) == 5);
  printf ("torn newest copy (%s): fell back to the older one, rewritten in place\n", what);
}

static void
test_torn (void)
{
  const uint64_t base = lbl_base_end (64 * MiB);
  static uint8_t junk[LBL_SIZE], before[LBL_COPIES], after[LBL_COPIES];
  struct label r, l;
  enum lbl_found found;
  bool other_bad;
  char err[256] = "";
  unsigned i;

  for (i = 0; i < LBL_SIZE; i++)
    junk[i] = (uint8_t) (i * 37 + 11);
  check_fallback ("garbage", junk);
  memset (junk, 0, sizeof junk);
  check_fallback ("zeroes", junk);

  /* A write that fails half way: the counter stays, A stays good, the
   * retry goes to B again. */
  assert (lbl_read (&io, base, &l, &found, &other_bad, err, sizeof err) == 0 && l.counter == 5);
  l.counter = 4;                          /* as if B's write (5) were the one in progress */
  raw_write (junk, base + LBL_SIZE, LBL_SIZE);
  fio.fail_write = -EIO;
  fio.torn = true;
  raw_read (before, base, LBL_COPIES);
  assert (lbl_write (&io, base, &l, err, sizeof err) == -EIO);
  assert (l.counter == 4 && strstr (err, "label write at offset") && strstr (err, "Input/output"));
  raw_read (after, base, LBL_COPIES);
  assert (memcmp (before, after, LBL_SIZE) == 0);       /* copy A untouched */
  assert (lbl_read (&io, base, &r, &found, &other_bad, err, sizeof err) == 0);
  assert (found == LBL_FOUND && other_bad && r.counter == 4);
  fio.fail_write = 0;
  fio.torn = false;
  assert (lbl_write (&io, base, &l, err, sizeof err) == 0 && l.counter == 5);
  assert (lbl_read (&io, base, &r, &found, &other_bad, err, sizeof err) == 0);
  assert (found == LBL_FOUND && !other_bad && r.counter == 5);

  /* A failed flush is an error too, and the counter stays. */
  fio.fail_flush = -EIO;
  assert (lbl_write (&io, base, &l, err, sizeof err) == -EIO && l.counter == 5);
  assert (strstr (err, "flush"));
  fio.fail_flush = 0;
  /* A read error. */
  fio.fail_read = -ENXIO;
  err[0] = 0;
  assert (lbl_read (&io, base, &r, &found, &other_bad, err, sizeof err) == -ENXIO);
  assert (strstr (err, "label read at offset") && !strchr (err, '\n'));
  fio.fail_read = 0;
  /* An invalid label is not written. */
  l.gen = 0;
  i = fio.writes;
  assert (lbl_write (&io, base, &l, err, sizeof err) == -EINVAL && l.counter == 5);
  assert (fio.writes == i && strstr (err, "not valid"));
  printf ("failed write, flush and read: errors named, the good copy kept, retry in place\n");
}

static void
test_blank (void)
{
  static uint8_t copies[LBL_COPIES];
  struct label r;
  bool other_bad = true;
  unsigned i;

  memset (copies, 0, sizeof copies);
  assert (lbl_decode (copies, &r, &other_bad) == LBL_BLANK && !other_bad);
  for (i = 0; i < LBL_COPIES; i += 1021) {
    copies[i] = 1;
    assert (lbl_decode (copies, &r, &other_bad) == LBL_NONBLANK && !other_bad);
    copies[i] = 0;
  }
  copies[LBL_COPIES - 1] = 0x80;
  assert (lbl_decode (copies, &r, &other_bad) == LBL_NONBLANK);
  memcpy (copies, "NBDRLABL", 8);                       /* a magic alone is no label */
  assert (lbl_decode (copies, &r, &other_bad) == LBL_NONBLANK);
  printf ("blank and non-blank areas told apart\n");
}

/* ---- validity ---- */

/* A valid pair: A with counter 4, B with counter 5. */
static void
make_pair (uint8_t *copies)
{
  struct label l;
  sample_label (&l, 64 * MiB);
  l.counter = 4;
  lbl_seal (&l);
  memcpy (copies, &l, LBL_SIZE);
  l.counter = 5;
  l.cons_seq++;
  lbl_seal (&l);
  memcpy (copies + LBL_SIZE, &l, LBL_SIZE);
}

static void
test_flips (void)
{
  static uint8_t copies[LBL_COPIES];
  struct label r;
  bool other_bad;
  unsigned i, slot, bit;

  make_pair (copies);
  assert (lbl_decode (copies, &r, &other_bad) == LBL_FOUND && !other_bad && r.counter == 5);
  for (slot = 0; slot < 2; slot++)
    for (i = 0; i < LBL_SIZE; i++)
      for (bit = 0; bit < 8; bit += 7) {
        uint8_t *p = copies + slot * LBL_SIZE + i;
        *p ^= (uint8_t) (1u << bit);
        assert (lbl_decode (copies, &r, &other_bad) == LBL_FOUND && other_bad);
        assert (r.counter == (slot ? 4 : 5));          /* the other copy */
        assert (!memcmp (&r, copies + (1 - slot) * LBL_SIZE, LBL_SIZE));
        *p ^= (uint8_t) (1u << bit);
      }
  /* A copy in the wrong slot does not count. */
  memcpy (copies, copies + LBL_SIZE, LBL_SIZE);
  assert (lbl_decode (copies, &r, &other_bad) == LBL_FOUND && other_bad && r.counter == 5);
  printf ("every one of %u byte flips (two bits each, both copies) detected\n", 2 * LBL_SIZE);
}

/* Each rule refuses a copy even with its checksum recomputed. */
static void
test_rules (void)
{
  struct label l, b;
  unsigned n = 0;

  sample_label (&l, 64 * MiB);
  lbl_seal (&l);
  assert (lbl_copy_valid (&l));
#define BAD(stmt)                                       \
  do {                                                  \
    b = l;                                              \
    stmt;                                               \
    lbl_seal (&b);                                      \
    assert (!lbl_copy_valid (&b));                      \
    n++;                                                \
  } while (0)
  BAD (b.magic[7] = 'X');
  BAD (b.version = 2);
  BAD (b.size = 512);
  BAD (b.nhist = LBL_HIST + 1);
  BAD (b.gen = 0);
  BAD (b.counter = UINT64_C(1) << 63);
  BAD (memset (b.name, 'x', sizeof b.name));
  BAD (memset (b.writer, 'w', sizeof b.writer));
  BAD (b.region_size = 0);
  BAD (b.area_size = LBL_COPIES + b.bitmap_bytes - 4096);
  BAD (b.area_size = LBL_AREA_ALIGN + 4096);
  BAD (b.bitmap_bytes = LBL_AREA_ALIGN);
  BAD (b.bitmap_bytes = 100);
  BAD (b.bitmap_offset = UINT64_MAX - 10);
  BAD (b.hist[1].id = 0);
#undef BAD
  b = l;
  b.crc ^= 1;
  assert (!lbl_copy_valid (&b));
  /* Accepted: an external label file (area 0), no bitmap, unused history slots. */
  b = l;
  b.area_size = 0;
  b.bitmap_offset = LBL_COPIES;
  lbl_seal (&b);
  assert (lbl_copy_valid (&b));
  b.bitmap_bytes = 0;
  b.region_size = 0;
  b.nhist = 0;
  lbl_seal (&b);
  assert (lbl_copy_valid (&b));
  printf ("%u validity rules each refuse a resealed copy\n", n + 1);
}

/* ---- classification ---- */

static enum lbl_class
cls (const struct lbl_self *s, const struct label *l, struct lbl_gen *c)
{
  enum lbl_class k = lbl_classify (s, LBL_FOUND, l, c);
  assert (lbl_classify (s, LBL_FOUND, l, NULL) == k);
  return k;
}

static void
test_classify_basic (void)
{
  struct lbl_self s;
  struct label l;
  struct lbl_gen c;

  sample_self (&s);
  sample_label (&l, 64 * MiB);
  memset (&c, 0xee, sizeof c);
  assert (lbl_classify (&s, LBL_BLANK, &l, &c) == LC_NEW && c.id == 0 && c.end_seq == 0);
  assert (lbl_classify (&s, LBL_NONBLANK, &l, &c) == LC_NOT_BLANK && c.id == 0);
  assert (cls (&s, &l, &c) == LC_SAME && c.id == 0x3333);
  l.group[3] ^= 1;
  assert (cls (&s, &l, &c) == LC_FOREIGN && c.id == 0);
  l.group[3] ^= 1;
  l.device[15] ^= 1;
  assert (cls (&s, &l, &c) == LC_FOREIGN);
  l.device[15] ^= 1;

  /* OLDER: a generation of our history, with where ours says it ended. */
  l.gen = 0x2222;
  l.nhist = 1;
  l.hist[0] = (struct lbl_gen) { 0x1111, 111, 0 };
  assert (cls (&s, &l, &c) == LC_OLDER && c.id == 0x2222 && c.end_seq == 200 && c.end_time_ns == 2000);
  l.gen = 0x1111;
  l.nhist = 0;
  assert (cls (&s, &l, &c) == LC_OLDER && c.id == 0x1111 && c.end_seq == 100);

  /* NEWER: it knows ours; the end seq as its history records it. */
  l.gen = 0x4444;
  l.nhist = 3;
  l.hist[0] = (struct lbl_gen) { 0x3333, 300, 3000 };
  l.hist[1] = (struct lbl_gen) { 0x2222, 200, 2000 };
  l.hist[2] = (struct lbl_gen) { 0x1111, 100, 1000 };
  assert (cls (&s, &l, &c) == LC_NEWER && c.id == 0x3333 && c.end_seq == 300);
  l.hist[0] = (struct lbl_gen) { 0x5555, 500, 5000 };   /* ours further back in its history */
  l.hist[1] = (struct lbl_gen) { 0x3333, 310, 3100 };
  assert (cls (&s, &l, &c) == LC_NEWER && c.id == 0x3333 && c.end_seq == 310);

  /* SPLIT: each has one the other lacks; common = newest shared, ours. */
  l.gen = 0x6666;
  l.nhist = 2;
  l.hist[0] = (struct lbl_gen) { 0x2222, 250, 2500 };
  l.hist[1] = (struct lbl_gen) { 0x1111, 100, 1000 };
  assert (cls (&s, &l, &c) == LC_SPLIT && c.id == 0x2222 && c.end_seq == 200);
  l.hist[0] = (struct lbl_gen) { 0x1111, 100, 1000 };  /* its order differs: ours decides */
  l.hist[1] = (struct lbl_gen) { 0x2222, 250, 2500 };
  assert (cls (&s, &l, &c) == LC_SPLIT && c.id == 0x2222 && c.end_seq == 200);
  l.nhist = 1;
  assert (cls (&s, &l, &c) == LC_SPLIT && c.id == 0x1111 && c.end_seq == 100);
  l.hist[0] = (struct lbl_gen) { 0x7777, 1, 1 };
  assert (cls (&s, &l, &c) == LC_SPLIT && c.id == 0 && c.end_seq == 0 && c.end_time_ns == 0);
  l.nhist = 0;
  assert (cls (&s, &l, &c) == LC_SPLIT && c.id == 0);
  /* Entries past nhist do not count. */
  l.hist[0] = (struct lbl_gen) { 0x3333, 300, 3000 };
  assert (cls (&s, &l, &c) == LC_SPLIT);
  s.nhist = 0;
  l.gen = 0x2222;
  assert (cls (&s, &l, &c) == LC_SPLIT);
}

static void
test_classify_history (void)
{
  struct lbl_self s, t;
  struct label l;
  struct lbl_gen c;
  uint64_t gens[12];
  unsigned i, j;

  sample_self (&s);
  s.gen = 0;
  s.nhist = 0;
  lbl_self_new_gen (&s, 5, 5);                          /* no generation yet: none ends */
  assert (s.gen != 0 && s.nhist == 0);
  gens[0] = s.gen;
  for (i = 1; i < 12; i++) {
    lbl_self_new_gen (&s, 100 * i, 1000 * i);
    gens[i] = s.gen;
    assert (s.gen != 0 && s.nhist == (i < LBL_HIST ? i : LBL_HIST));
    assert (s.hist[0].id == gens[i - 1] && s.hist[0].end_seq == 100 * i);
    for (j = 0; j < s.nhist; j++)
      assert (s.hist[j].id == gens[i - 1 - j] && s.hist[j].end_seq == 100 * (i - j) &&
              s.hist[j].end_time_ns == 1000 * (i - j) && s.hist[j].id != s.gen);
  }
  /* gens[11] current; gens[3..10] in the history; gens[0..2] fell off. */
  memset (&l, 0, sizeof l);
  t = s;
  for (i = 0; i < 11; i++) {
    t.gen = gens[i];
    t.nhist = 0;
    lbl_set_self (&l, &t);
    if (i >= 3)
      assert (cls (&s, &l, &c) == LC_OLDER && c.id == gens[i] && c.end_seq == 100 * (i + 1));
    else
      assert (cls (&s, &l, &c) == LC_SPLIT && c.id == 0);   /* too old to know: operator */
  }
  /* A label that went on from our current generation: NEWER. */
  t = s;
  lbl_self_new_gen (&t, 9999, 1);
  lbl_set_self (&l, &t);
  assert (l.nhist == LBL_HIST && l.hist[0].id == gens[11] && l.hist[LBL_HIST - 1].id == gens[4]);
  assert (cls (&s, &l, &c) == LC_NEWER && c.id == gens[11] && c.end_seq == 9999);
  /* ... and our view of it: OLDER for the label's side. */
  {
    struct label m;
    memset (&m, 0, sizeof m);
    lbl_set_self (&m, &s);
    assert (cls (&t, &m, &c) == LC_OLDER && c.id == gens[11] && c.end_seq == 9999);
  }
  /* Both went on from gens[11]: SPLIT with gens[11] in common. */
  lbl_self_new_gen (&s, 8888, 2);
  assert (cls (&s, &l, &c) == LC_SPLIT && c.id == gens[11] && c.end_seq == 8888);
  /* set_self copies exactly the identity. */
  memset (&l, 0x77, sizeof l);
  lbl_set_self (&l, &s);
  assert (!memcmp (l.group, s.group, 16) && !memcmp (l.device, s.device, 16) && l.gen == s.gen &&
          l.nhist == s.nhist && !memcmp (l.hist, s.hist, sizeof l.hist) && l.counter == 0x7777777777777777);
  printf ("classification: every case, history order, drop-off of the oldest, split brain\n");
}

static void
test_names (void)
{
  static const enum lbl_class all[] = { LC_NEW, LC_NOT_BLANK, LC_FOREIGN, LC_SAME, LC_OLDER,
                                        LC_NEWER, LC_SPLIT };
  unsigned i, j;

  for (i = 0; i < 7; i++)
    for (j = 0; j < i; j++)
      assert (strcmp (lbl_class_name (all[i]), lbl_class_name (all[j])) != 0);
  assert (!strcmp (lbl_class_name (LC_SPLIT), "split-brain"));
  assert (!strcmp (lbl_class_name (LC_NEW), "new"));
}

/* ---- ids ---- */

static void
test_ids (void)
{
  uint8_t u[16], prev[16] = { 0 };
  char s[37], g[17];
  unsigned i, k;

  for (i = 0; i < 1000; i++) {
    lbl_uuid_new (u);
    assert ((u[6] >> 4) == 4 && (u[8] >> 6) == 2);
    assert (memcmp (u, prev, 16) != 0);
    memcpy (prev, u, 16);
    memset (s, 'z', sizeof s);
    lbl_uuid_str (u, s);
    assert (strlen (s) == 36 && s[14] == '4' && strchr ("89ab", s[19]));
    for (k = 0; k < 36; k++)
      assert ((k == 8 || k == 13 || k == 18 || k == 23) ? s[k] == '-'
              : strchr ("0123456789abcdef", s[k]) != NULL);
    assert (lbl_gen_new () != 0);
  }
  memcpy (u, "\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10", 16);
  lbl_uuid_str (u, s);
  assert (!strcmp (s, "01234567-89ab-cdef-fedc-ba9876543210"));
  lbl_gen_str (0x1234, g);
  assert (!strcmp (g, "0000000000001234"));
  lbl_gen_str (UINT64_MAX, g);
  assert (!strcmp (g, "ffffffffffffffff"));
  printf ("ids: 1000 UUIDs of version 4, formatted; generation ids non-zero\n");
}

int
main (void)
{
  setvbuf (stdout, NULL, _IOLBF, 0);
  assert ((fio.fd = mkstemp (path)) >= 0);
  unlink (path);

  test_geometry ();
  test_roundtrip_and_alternation ();
  test_torn ();
  test_blank ();
  test_flips ();
  test_rules ();
  test_classify_basic ();
  test_classify_history ();
  test_names ();
  test_ids ();
  close (fio.fd);
  printf ("label: all tests passed\n");
  return 0;
}
