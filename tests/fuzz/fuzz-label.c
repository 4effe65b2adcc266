/* fuzz-label.c: libFuzzer harness for the leg-label loader (lbl_decode,
 * lbl_read, lbl_copy_valid, lbl_classify, lbl_write; src/label.c).
 *
 * The input is a flags byte and then the two label copies (8192 bytes, A
 * then B; a short input is padded with zeroes, a longer one cut).  Before
 * decoding, the flags may stamp a copy's fixed fields (magic, version,
 * size) and recompute its checksum, so that inputs reach the semantic
 * checks past the crc:
 *   bit0 F_STAMP_A   magic, version 1 and size 4096 written into copy A
 *   bit1 F_STAMP_B   the same into copy B
 *   bit2 F_SEAL_A    copy A's crc recomputed (after the stamp)
 *   bit3 F_SEAL_B    copy B's crc recomputed
 *   bit4 F_SLOT      counters forced to their slot's parity before the seal
 *   bit5 F_WRITE_FAIL the round trip's write fails half way (torn)
 *
 * Invariants checked (ids in brackets):
 *   [label-decode]   lbl_decode agrees with a reference reading of the
 *                    format (nbd-replicator-replog(5), LEG LABELS): FOUND
 *                    exactly when a copy is valid in its own slot, the
 *                    winner is the valid copy with the higher counter and
 *                    is that copy byte for byte, passes lbl_copy_valid;
 *                    other_bad exactly when one copy counts and the other
 *                    is not blank or the winner's counter is above 1; BLANK exactly
 *                    when all 8192 bytes are zero; lbl_read through an
 *                    lbl_io says the same;
 *   [label-classify] lbl_classify against a fixed identity returns a
 *                    member of enum lbl_class consistent with the label
 *                    (FOREIGN iff another group or device; SAME iff our
 *                    generation; OLDER with common = our history's entry;
 *                    NEWER with common = the label's entry; SPLIT with a
 *                    common generation both histories hold, or none);
 *   [label-rewrite]  resealing the decoded label decodes to the same;
 *                    lbl_write of it goes to the other slot, leaves the
 *                    winning copy byte for byte, and decodes to what was
 *                    written with counter + 1; a torn write decodes to
 *                    the old winner again and keeps the counter.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "label.h"

#include "fuzz-common.h"

enum {
  F_STAMP_A = 1,
  F_STAMP_B = 2,
  F_SEAL_A = 4,
  F_SEAL_B = 8,
  F_SLOT = 16,
  F_WRITE_FAIL = 32,
};

#define SZ LBL_SIZE

static uint8_t area[LBL_COPIES];        /* the two copies as the "leg" holds them */
static bool write_fails;

/* ---- an lbl_io over `area` ---- */

static int
m_pread (void *opaque, void *buf, uint32_t len, uint64_t off)
{
  (void) opaque;
  if (off > LBL_COPIES || len > LBL_COPIES - off)
    return -EINVAL;
  memcpy (buf, area + off, len);
  return 0;
}

static int
m_pwrite (void *opaque, const void *buf, uint32_t len, uint64_t off)
{
  (void) opaque;
  if (off > LBL_COPIES || len > LBL_COPIES - off)
    return -EINVAL;
  if (write_fails) {
    memcpy (area + off, buf, len / 2);
    memset (area + off + len / 2, 0xa5, len - len / 2);
    return -EIO;
  }
  memcpy (area + off, buf, len);
  return 0;
}

static int
m_flush (void *opaque)
{
  (void) opaque;
  return 0;
}

static const struct lbl_io mio = { NULL, m_pread, m_pwrite, m_flush };

/* ---- reference reading of one copy (the man page's rules) ---- */

static bool
ref_zero (const uint8_t *p, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

static bool
ref_valid (const uint8_t *c, unsigned slot)
{
  uint64_t counter = fz_le64 (c + 16), area_size = fz_le64 (c + 128);
  uint64_t bm_off = fz_le64 (c + 136), bm_bytes = fz_le64 (c + 144);
  uint32_t nhist = fz_le32 (c + 164), i;

  if (memcmp (c, "NBDRLABL", 8) || fz_le32 (c + 8) != 1 || fz_le32 (c + 12) != 4096 ||
      fz_le32 (c + 4092) != fz_crc32c (0, c, 4092))
    return false;
  if ((counter & 1) != slot || counter >= UINT64_C(1) << 63)
    return false;
  if (nhist > 8 || fz_le64 (c + 168) == 0 || !memchr (c + 56, 0, 64) || !memchr (c + 224, 0, 64))
    return false;
  if (bm_bytes % 4096 || (bm_bytes && fz_le32 (c + 152) == 0) || bm_off + bm_bytes < bm_off)
    return false;
  if (area_size && (area_size % (1u << 20) || area_size < 8192 || bm_bytes > area_size - 8192))
    return false;
  for (i = 0; i < nhist; i++)
    if (fz_le64 (c + 288 + 24 * i) == 0)
      return false;
  return true;
}

/* ---- the fixed identity ---- */

static struct lbl_self self;

static void
make_self (void)
{
  unsigned i;
  for (i = 0; i < 16; i++) {
    self.group[i] = (uint8_t) (0x10 + i);
    self.device[i] = (uint8_t) (0x80 + i);
  }
  self.gen = 0x3333;
  self.nhist = 3;
  self.hist[0] = (struct lbl_gen) { 0x2222, 200, 2000 };
  self.hist[1] = (struct lbl_gen) { 0x1111, 100, 1000 };
  self.hist[2] = (struct lbl_gen) { 0x0a0a, 50, 500 };
}

static int
hist_idx (const struct lbl_gen *h, unsigned n, uint64_t id)
{
  unsigned i;
  for (i = 0; i < n && i < LBL_HIST; i++)
    if (id && h[i].id == id)
      return (int) i;
  return -1;
}

static void
check_classify (const struct label *l)
{
  struct lbl_gen c;
  enum lbl_class k = lbl_classify (&self, LBL_FOUND, l, &c);
  bool foreign = memcmp (l->group, self.group, 16) || memcmp (l->device, self.device, 16);
  int i = hist_idx (self.hist, self.nhist, l->gen), j = hist_idx (l->hist, l->nhist, self.gen);

  FZ_CHECK ("label-classify", k == lbl_classify (&self, LBL_FOUND, l, NULL),
            "the result depends on whether common is asked for");
  FZ_CHECK ("label-classify", strcmp (lbl_class_name (k), "unknown") != 0, "class %d", (int) k);
  switch (k) {
  case LC_FOREIGN:
    FZ_CHECK ("label-classify", foreign && c.id == 0, "FOREIGN for our own group and device");
    return;
  case LC_SAME:
    FZ_CHECK ("label-classify", !foreign && l->gen == self.gen && c.id == self.gen, "SAME");
    return;
  case LC_OLDER:
    FZ_CHECK ("label-classify", !foreign && l->gen != self.gen && i >= 0 &&
              !memcmp (&c, &self.hist[i], sizeof c), "OLDER without its entry in our history");
    return;
  case LC_NEWER:
    FZ_CHECK ("label-classify", !foreign && l->gen != self.gen && i < 0 && j >= 0 &&
              !memcmp (&c, &l->hist[j], sizeof c), "NEWER without our generation in its history");
    return;
  case LC_SPLIT:
    FZ_CHECK ("label-classify", !foreign && l->gen != self.gen && i < 0 && j < 0,
              "SPLIT although one side knows the other");
    if (c.id == 0) {
      for (i = 0; i < (int) self.nhist; i++)
        FZ_CHECK ("label-classify", hist_idx (l->hist, l->nhist, self.hist[i].id) < 0,
                  "SPLIT without a common generation, but %#" PRIx64 " is shared", self.hist[i].id);
    }
    else {
      /* The newest shared one, in our history's order. */
      i = hist_idx (self.hist, self.nhist, c.id);
      FZ_CHECK ("label-classify", i >= 0 && !memcmp (&c, &self.hist[i], sizeof c) &&
                hist_idx (l->hist, l->nhist, c.id) >= 0, "SPLIT's common is not shared");
      while (--i >= 0)
        FZ_CHECK ("label-classify", hist_idx (l->hist, l->nhist, self.hist[i].id) < 0,
                  "SPLIT's common is not the newest shared generation");
    }
    return;
  case LC_NEW:
  case LC_NOT_BLANK:
    break;
  }
  FZ_CHECK ("label-classify", false, "class %s for a FOUND label", lbl_class_name (k));
}

/* ---- decoding ---- */

static void
prepare_input (const uint8_t *data, size_t size)
{
  struct fz_in in = { data, size };
  uint8_t flags = fz_u8 (&in);
  unsigned s;

  memset (area, 0, sizeof area);
  memcpy (area, in.p, in.n < LBL_COPIES ? in.n : LBL_COPIES);
  for (s = 0; s < 2; s++) {
    uint8_t *c = area + s * SZ;
    if (flags & (F_STAMP_A << s)) {
      memcpy (c, "NBDRLABL", 8);
      memcpy (c + 8, &(uint32_t) { 1 }, 4);
      memcpy (c + 12, &(uint32_t) { 4096 }, 4);
    }
    if (flags & F_SLOT)
      c[16] = (uint8_t) ((c[16] & ~1u) | s);
    if (flags & (F_SEAL_A << s)) {
      uint32_t crc = fz_crc32c (0, c, 4092);
      memcpy (c + 4092, &crc, 4);
    }
  }
  write_fails = (flags & F_WRITE_FAIL) != 0;
}

/* Decode `area` and check it against the reference; the winning slot or -1. */
static int
check_decode (struct label *out, enum lbl_found *found)
{
  struct label r;
  enum lbl_found f2;
  bool ob, ob2;
  bool va = ref_valid (area, 0), vb = ref_valid (area + SZ, 1);
  int win = -1;
  char err[256];

  *found = lbl_decode (area, out, &ob);
  if (va || vb)
    win = va && (!vb || fz_le64 (area + 16) > fz_le64 (area + SZ + 16)) ? 0 : 1;
  FZ_CHECK ("label-decode", (*found == LBL_FOUND) == (win >= 0),
            "found=%d, the reference says copy A %s, B %s", (int) *found,
            va ? "valid" : "invalid", vb ? "valid" : "invalid");
  {
    /* other_bad: one copy counts, and the other was written once: not all
     * zero, or the winner's counter says its slot was written before. */
    bool want = va != vb && (!ref_zero (va ? area + SZ : area, SZ) ||
                             fz_le64 ((va ? area : area + SZ) + 16) > 1);
    FZ_CHECK ("label-decode", ob == want, "other_bad=%d with A %d, B %d", ob, va, vb);
  }
  if (win < 0)
    FZ_CHECK ("label-decode", (*found == LBL_BLANK) == ref_zero (area, LBL_COPIES),
              "found=%d for an area that is%s all zero", (int) *found,
              ref_zero (area, LBL_COPIES) ? "" : " not");
  else
    FZ_CHECK ("label-decode", !memcmp (out, area + win * SZ, SZ) && lbl_copy_valid (out),
              "the result is not copy %c byte for byte, or not valid", "AB"[win]);
  FZ_CHECK ("label-decode", lbl_read (&mio, 0, &r, &f2, &ob2, err, sizeof err) == 0 &&
            f2 == *found && ob2 == ob && (f2 != LBL_FOUND || !memcmp (&r, out, SZ)),
            "lbl_read disagrees with lbl_decode");
  return win;
}

static void
check_rewrite (struct label *out, int win)
{
  static uint8_t before[LBL_COPIES];
  struct label again, l = *out;
  enum lbl_found f;
  bool ob;
  char err[256] = "";
  int r;

  /* Resealing what was decoded changes nothing. */
  lbl_seal (&l);
  memcpy (before, area, sizeof area);
  FZ_CHECK ("label-rewrite", !memcmp (&l, out, SZ), "resealing changed the label");
  FZ_CHECK ("label-rewrite", lbl_decode (area, &again, &ob) == LBL_FOUND && !memcmp (&again, out, SZ),
            "decoding again gave another label");

  /* A write goes to the other slot and wins (or, torn, changes nothing). */
  r = lbl_write (&mio, 0, &l, err, sizeof err);
  if (out->counter + 1 == UINT64_C(1) << 63) {
    FZ_CHECK ("label-rewrite", r == -EINVAL && !memcmp (before, area, sizeof area),
              "a write to counter 2^63 was not refused");
    return;
  }
  FZ_CHECK ("label-rewrite", !memcmp (before + win * SZ, area + win * SZ, SZ),
            "the write touched the winning copy %c", "AB"[win]);
  f = lbl_decode (area, &again, &ob);
  if (write_fails) {
    FZ_CHECK ("label-rewrite", r == -EIO && l.counter == out->counter && err[0] &&
              f == LBL_FOUND && !memcmp (&again, out, SZ) && ob,
              "a torn write: r=%d, the old copy did not win alone", r);
    return;
  }
  FZ_CHECK ("label-rewrite", r == 0 && l.counter == out->counter + 1, "lbl_write: %d %s", r, err);
  FZ_CHECK ("label-rewrite", f == LBL_FOUND && !ob && !memcmp (&again, &l, SZ) &&
            (again.counter & 1) != (unsigned) win, "the new copy does not win alongside the old");
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  fz_crc_selftest ();
  fz_reports_install ();
  make_self ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct label out;
  enum lbl_found found;
  struct lbl_gen c;
  int win;

  prepare_input (data, size);
  fz_reports_reset ();
  win = check_decode (&out, &found);
  if (found != LBL_FOUND) {
    enum lbl_class k = lbl_classify (&self, found, &out, &c);
    FZ_CHECK ("label-classify", k == (found == LBL_BLANK ? LC_NEW : LC_NOT_BLANK) && c.id == 0,
              "class %s for found=%d", lbl_class_name (k), (int) found);
    return 0;
  }
  check_classify (&out);
  check_rewrite (&out, win);
  FZ_CHECK ("label-decode", fz_rep.errors == 0, "an error was reported: %s", fz_rep.first_error);
  return 0;
}
