/* fuzz-dirtylog.c: libFuzzer harness for the dirty-log bitmap loader
 * (dlog_open of an existing file, src/dirtylog.c), and for the round trip
 * through dlog_flush and dlog_invalidate.
 *
 * The input picks a leg geometry and then either gives the file verbatim
 * (F_RAW) or describes it: the harness writes a well-formed file for that
 * geometry (header and bitmap pages with their checksums) with page
 * contents from the input, then applies raw byte patches, then optionally
 * recomputes the checksums so patched fields reach the semantic checks.
 *
 * Input layout (little-endian; a short input reads as zeroes):
 *   u8  flags     F_* below
 *   u8  shift     region size = 4096 << (shift % 12)
 *   u32 nbits     regions = 1 + nbits % 100000 (up to 4 bitmap pages)
 *   u32 sub       device size = (regions - 1) * region + 1 + sub % region
 *   u8  site
 *   u64 preset    if F_PRESET: bits set in the bitmap before open (pattern)
 *   F_RAW:  the rest of the input is the file
 *   else:   u64 salt
 *           u8  mismatch  bit0 size+512, bit1 region*2, bit2 site+1,
 *                         bit3 other device name, bit4 nbits+1 (in the header)
 *           per page: u8 fill (0 zero, 1 ones, 2 eight input bytes
 *                     repeated, else that byte repeated)
 *           u16 trunc     bit15: the file is cut to (trunc & 0x7fff) * 64 bytes
 *           u8  nops      then nops x (u8 op, u32 region, u16 count): bits
 *                         set (op even) or cleared (op odd) after open
 *           patches: u24 offset (mod file), u8 len (% 64 + 1), bytes
 *
 * Invariants checked (ids in brackets):
 *   [dlog-load]   dlog_open succeeds exactly when the reference says the file
 *                 is usable (it refuses only a valid header of another
 *                 device, geometry or site), with one non-empty line in err
 *                 on failure; the bitmap afterwards is exactly the preset
 *                 bits OR the file's bits, with every bit of a page that
 *                 fails its checks (or is missing) set and nothing past the
 *                 last region; created / header_bad / bad_pages /
 *                 bits_loaded are what the reference counts;
 *   [dlog-create] a file that open (re)created is valid for this leg and
 *                 holds the bitmap's bits;
 *   [dlog-roundtrip] after bits are set and cleared, dlog_flush and a new
 *                 open read back exactly the bitmap (pages that changed) and
 *                 the file's old bits (pages that did not), with no bad
 *                 page; after dlog_invalidate every region reads as dirty.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitmap.h"
#include "dirtylog.h"

#include "fuzz-common.h"

enum {
  F_RAW = 1,            /* the file is the rest of the input */
  F_FIX_HDR = 2,        /* recompute the header crc after the patches */
  F_FIX_PAGES = 4,      /* recompute every page's crc after the patches */
  F_PRESET = 8,         /* bits set in the bitmap before open */
  F_NOFILE = 16,        /* no file: open creates it */
  F_EMPTY = 32,         /* an empty file */
  F_INVALIDATE = 64,    /* dlog_invalidate, then open again */
  F_NOFIX_IDX = 128,    /* F_FIX_PAGES keeps a wrong page index (else it also fixes it) */
};

#define PAGE 4096u
#define WORDS 511u
#define BITS_PER_PAGE ((uint64_t) WORDS * 64)
#define MAX_PAGES 5u                    /* 100000 regions: 4 pages, plus room */
#define FILE_MAX ((MAX_PAGES + 1) * PAGE)

static char path[600], path_new[640];
static uint8_t file[FILE_MAX + 65536];  /* the file as written */
static size_t file_len;
static const char *device_name = "db";

struct geom {
  uint64_t region, size, nbits, npages, nwords;
  unsigned site;
};

static uint32_t
ref_crc (uint64_t salt, const uint8_t *p)
{
  return fz_crc32c (fz_crc32c (0, &salt, 8), p, 4092);
}

static uint64_t
npages_of (uint64_t nbits)
{
  uint64_t words = (nbits + 63) / 64;
  return words ? (words + WORDS - 1) / WORDS : 1;
}

/* Mask of the valid bits of word w (global word index). */
static uint64_t
word_mask (const struct geom *g, uint64_t w)
{
  if (w == g->nwords - 1 && g->nbits % 64)
    return (UINT64_C(1) << (g->nbits % 64)) - 1;
  return ~UINT64_C(0);
}

static void
put32 (uint8_t *p, uint32_t v)
{
  memcpy (p, &v, 4);
}

static void
put64 (uint8_t *p, uint64_t v)
{
  memcpy (p, &v, 8);
}

/* Header page per the format comment of dirtylog.c. */
static void
make_header (uint8_t *h, const struct geom *g, uint64_t salt, uint8_t mismatch)
{
  memset (h, 0, PAGE);
  memcpy (h, "NBDRDLOG", 8);
  put32 (h + 8, 1);
  put32 (h + 12, PAGE);
  put64 (h + 16, salt);
  put64 (h + 24, g->size + ((mismatch & 1) ? 512 : 0));
  put64 (h + 32, g->region * ((mismatch & 2) ? 2 : 1));
  put64 (h + 40, g->nbits + ((mismatch & 16) ? 1 : 0));
  put32 (h + 48, g->site + ((mismatch & 4) ? 1 : 0));
  put32 (h + 52, (uint32_t) g->npages);
  snprintf ((char *) h + 56, 64, "%s", (mismatch & 8) ? "another" : device_name);
  put32 (h + 4092, ref_crc (salt, h));
}

/* ---- reference loader ------------------------------------------------------------------ */

struct expect {
  bool refused, created, header_bad;
  uint64_t bad_pages, bits_loaded;
  uint64_t *words;                      /* the bitmap after open */
  uint64_t *file_words;                 /* what the file says (bad pages: ones) */
  bool *page_bad;
};

static bool
ref_header_ok (const uint8_t *h, size_t len)
{
  return len >= PAGE && !memcmp (h, "NBDRDLOG", 8) && fz_le32 (h + 8) == 1 &&
    fz_le32 (h + 12) == PAGE && fz_le32 (h + 4092) == ref_crc (fz_le64 (h + 16), h);
}

static void
ref_load (const struct geom *g, const uint64_t *preset, bool exists, struct expect *e)
{
  uint64_t k, w;

  memcpy (e->words, preset, g->nwords * 8);
  if (!exists || file_len == 0) {
    e->created = true;
    return;
  }
  if (!ref_header_ok (file, file_len)) {
    e->header_bad = true;
    for (w = 0; w < g->nwords; w++)
      e->words[w] = word_mask (g, w);
    return;
  }
  if (fz_le64 (file + 24) != g->size || fz_le64 (file + 32) != g->region ||
      fz_le32 (file + 48) != g->site || strncmp ((const char *) file + 56, device_name, 64) ||
      fz_le64 (file + 40) != g->nbits) {
    e->refused = true;
    return;
  }
  for (k = 0; k < g->npages; k++) {
    const uint8_t *p = file + (k + 1) * PAGE;
    bool good = file_len >= (k + 2) * PAGE && fz_le32 (p + 4088) == k &&
      fz_le32 (p + 4092) == ref_crc (fz_le64 (file + 16), p);
    e->page_bad[k] = !good;
    if (!good)
      e->bad_pages++;
    for (w = 0; w < WORDS && k * WORDS + w < g->nwords; w++) {
      uint64_t gw = k * WORDS + w;
      uint64_t v = good ? fz_le64 (p + w * 8) : ~UINT64_C(0);
      v &= word_mask (g, gw);
      e->file_words[gw] = v;
      e->bits_loaded += (uint64_t) __builtin_popcountll (v);
      e->words[gw] |= v;
    }
  }
}

/* Read `path` back and check it is a valid dirty log of this leg holding
 * exactly `words`. */
static void
check_file_holds (const struct geom *g, const uint64_t *words, const char *id, const char *what)
{
  static uint8_t buf[FILE_MAX];
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  ssize_t n;
  uint64_t k, w;

  FZ_CHECK (id, fd >= 0, "%s: the dirty log file is missing", what);
  n = pread (fd, buf, sizeof buf, 0);
  close (fd);
  FZ_CHECK (id, n >= (ssize_t) ((g->npages + 1) * PAGE), "%s: file has %zd bytes, %" PRIu64
            " pages expected", what, n, g->npages);
  FZ_CHECK (id, ref_header_ok (buf, (size_t) n) && fz_le64 (buf + 24) == g->size &&
            fz_le64 (buf + 32) == g->region && fz_le64 (buf + 40) == g->nbits &&
            fz_le32 (buf + 48) == g->site && fz_le32 (buf + 52) == g->npages &&
            !strcmp ((const char *) buf + 56, device_name),
            "%s: the file's header is not a valid header of this leg", what);
  for (k = 0; k < g->npages; k++) {
    const uint8_t *p = buf + (k + 1) * PAGE;
    FZ_CHECK (id, fz_le32 (p + 4088) == k && fz_le32 (p + 4092) == ref_crc (fz_le64 (buf + 16), p),
              "%s: page %" PRIu64 " does not validate", what, k);
    for (w = 0; w < WORDS; w++) {
      uint64_t gw = k * WORDS + w, v = fz_le64 (p + w * 8);
      FZ_CHECK (id, v == (gw < g->nwords ? words[gw] : 0),
                "%s: word %" PRIu64 " is %#" PRIx64 ", bitmap has %#" PRIx64, what, gw, v,
                gw < g->nwords ? words[gw] : 0);
    }
  }
}

static void
write_file (void)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  size_t done = 0;
  if (fd == -1) {
    perror (path);
    abort ();
  }
  while (done < file_len) {
    ssize_t r = write (fd, file + done, file_len - done);
    if (r <= 0) {
      perror ("write");
      abort ();
    }
    done += (size_t) r;
  }
  close (fd);
}

static void
check_bitmap (const struct bitmap *b, const struct geom *g, const uint64_t *words,
              const char *id, const char *what)
{
  uint64_t w;
  for (w = 0; w < g->nwords; w++)
    FZ_CHECK (id, b->words[w] == words[w], "%s: bitmap word %" PRIu64 " is %#" PRIx64
              ", expected %#" PRIx64, what, w, b->words[w], words[w]);
  FZ_CHECK (id, b->words[g->nwords] == 0, "%s: bits past the bitmap's end", what);
}

/* libFuzzer's entry points, shaped like every harness's (duplicates pairs them with
 * fuzz-replog.c's), deliberately: each harness is its own program. */
int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  snprintf (path, sizeof path, "%s/leg.bitmap", fz_workdir ());
  snprintf (path_new, sizeof path_new, "%s.new", path);
  fz_crc_selftest ();
  fz_reports_install ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct fz_in in = { data, size };
  struct geom g;
  struct dlog_id id;
  struct dlog_open_info info;
  struct expect e;
  struct bitmap *b = NULL, *b2 = NULL;
  struct dlog *dl = NULL;
  char err[512];
  uint8_t flags, nops = 0, ops[256][7];
  uint64_t preset_pat = 0, k, w;
  uint64_t *preset, *after;
  bool *page_written;
  bool exists;
  int r;

  flags = fz_u8 (&in);
  memset (&g, 0, sizeof g);
  g.region = UINT64_C(4096) << (fz_u8 (&in) % 12);
  g.nbits = 1 + fz_u32 (&in) % 100000;
  g.size = (g.nbits - 1) * g.region + 1 + fz_u32 (&in) % g.region;
  g.site = fz_u8 (&in);
  g.nwords = (g.nbits + 63) / 64;
  g.npages = npages_of (g.nbits);
  if (flags & F_PRESET)
    preset_pat = fz_u64 (&in);

  /* The file. */
  memset (file, 0, sizeof file);
  file_len = 0;
  if (flags & F_RAW) {
    file_len = in.n < sizeof file ? in.n : sizeof file;
    memcpy (file, in.p, file_len);
    in.n = 0;
  }
  else {
    uint64_t salt = fz_u64 (&in);
    uint8_t mismatch = fz_u8 (&in);
    uint16_t trunc;
    make_header (file, &g, salt, mismatch);
    for (k = 0; k < g.npages; k++) {
      uint8_t *p = file + (k + 1) * PAGE;
      uint8_t fill = fz_u8 (&in), pat[8];
      unsigned i;
      if (fill == 2)
        for (i = 0; i < 8; i++)
          pat[i] = fz_u8 (&in);
      for (i = 0; i < 4088; i++)
        p[i] = fill == 0 ? 0 : fill == 1 ? 0xff : fill == 2 ? pat[i % 8] : fill;
      put32 (p + 4088, (uint32_t) k);
      put32 (p + 4092, ref_crc (salt, p));
    }
    file_len = (g.npages + 1) * PAGE;
    trunc = fz_u16 (&in);
    if (trunc & 0x8000) {
      size_t t = (size_t) (trunc & 0x7fff) * 64;
      if (t < file_len)
        file_len = t;
    }
    nops = fz_u8 (&in);
    for (k = 0; k < nops; k++)
      for (w = 0; w < 7; w++)
        ops[k][w] = fz_u8 (&in);
    while (in.n >= 4 && file_len) {
      uint64_t off = fz_take (&in, 3) % file_len;
      unsigned len = fz_u8 (&in) % 64 + 1, i;
      for (i = 0; i < len && in.n; i++) {
        uint8_t v = fz_u8 (&in);
        if (off + i < file_len)
          file[off + i] = v;
      }
    }
  }
  if ((flags & F_FIX_HDR) && file_len >= PAGE)
    put32 (file + 4092, ref_crc (fz_le64 (file + 16), file));
  if ((flags & F_FIX_PAGES) && file_len >= PAGE)
    for (k = 0; (k + 2) * PAGE <= file_len; k++) {
      uint8_t *p = file + (k + 1) * PAGE;
      if (!(flags & F_NOFIX_IDX))
        put32 (p + 4088, (uint32_t) k);
      put32 (p + 4092, ref_crc (fz_le64 (file + 16), p));
    }
  if (flags & F_EMPTY)
    file_len = 0;
  exists = !(flags & F_NOFILE);

  unlink (path);
  unlink (path_new);
  if (exists)
    write_file ();

  /* The bitmap, and what open must make of it. */
  b = bitmap_new (g.size, g.region);
  preset = calloc (g.nwords + 1, 8);
  after = calloc (g.nwords + 1, 8);
  e.words = calloc (g.nwords + 1, 8);
  e.file_words = calloc (g.nwords + 1, 8);
  e.page_bad = calloc (g.npages, sizeof *e.page_bad);
  page_written = calloc (g.npages, sizeof *page_written);
  if (!b || !preset || !after || !e.words || !e.file_words || !e.page_bad || !page_written)
    abort ();
  FZ_CHECK ("dlog-load", b->nbits == g.nbits, "bitmap_new made %" PRIu64 " bits, %" PRIu64
            " expected", b->nbits, g.nbits);
  if (flags & F_PRESET)
    for (w = 0; w < g.nwords; w++) {
      uint64_t v = (preset_pat * (w + 1)) ^ (preset_pat >> (w % 64));
      preset[w] = v & word_mask (&g, w);
      b->words[w] = preset[w];
    }
  e.refused = e.created = e.header_bad = false;
  e.bad_pages = e.bits_loaded = 0;
  ref_load (&g, preset, exists, &e);

  id.device = device_name;
  id.size = g.size;
  id.region_size = g.region;
  id.site = g.site;
  err[0] = 0;
  fz_reports_reset ();
  r = dlog_open (path, &id, b, &dl, &info, err, sizeof err);
  FZ_CHECK ("dlog-load", fz_rep.errors == 0, "dlog_open printed an error: %s", fz_rep.first_error);
  if (r == -1) {
    FZ_CHECK ("dlog-load", e.refused, "dlog_open refused a usable file: %s", err);
    FZ_CHECK ("dlog-load", err[0] && !strchr (err, '\n'), "refusal without a one-line reason");
    goto out;
  }
  FZ_CHECK ("dlog-load", r == 0 && dl, "dlog_open returned %d", r);
  FZ_CHECK ("dlog-load", !e.refused, "dlog_open accepted the dirty log of another leg");
  FZ_CHECK ("dlog-load", info.created == e.created && info.header_bad == e.header_bad &&
            info.bad_pages == e.bad_pages && info.bits_loaded == e.bits_loaded,
            "open info created=%d header_bad=%d bad_pages=%" PRIu64 " bits_loaded=%" PRIu64
            ", reference %d/%d/%" PRIu64 "/%" PRIu64, info.created, info.header_bad,
            info.bad_pages, info.bits_loaded, e.created, e.header_bad, e.bad_pages, e.bits_loaded);
  check_bitmap (b, &g, e.words, "dlog-load", "after open");
  if (e.created || e.header_bad) {
    check_file_holds (&g, e.words, "dlog-create", "after open");
    for (k = 0; k < g.npages; k++)
      e.page_bad[k] = false;
    memcpy (e.file_words, e.words, g.nwords * 8);
  }
  FZ_CHECK ("dlog-create", access (path_new, F_OK) == -1, "the temporary file %s was left behind",
            path_new);

  /* Change bits (simulated alongside: a page whose bits flipped must be
   * written by the next flush), flush, and read it back into a fresh
   * bitmap. */
  memcpy (after, e.words, g.nwords * 8);
  for (k = 0; k < g.npages; k++)
    page_written[k] = e.page_bad[k] || (!e.created && e.header_bad);
  for (k = 0; k < nops; k++) {
    uint32_t region;
    uint16_t count;
    uint64_t first, last, i;
    memcpy (&region, &ops[k][1], 4);
    memcpy (&count, &ops[k][5], 2);
    region %= (uint32_t) g.nbits;
    if (ops[k][0] & 1) {
      bitmap_clear_bits (b, region, count);
      first = region;
      last = region + (uint64_t) count;          /* exclusive */
    }
    else {
      uint64_t off = region * g.region, len = (uint64_t) count * 512 + 1;
      bitmap_set_range (b, off, len);
      if (len > g.size - off)
        len = g.size - off;
      first = off / g.region;
      last = (off + len - 1) / g.region + 1;
    }
    for (i = first; i < last && i < g.nbits; i++) {
      uint64_t bit = UINT64_C(1) << (i % 64), old = after[i / 64];
      after[i / 64] = (ops[k][0] & 1) ? old & ~bit : old | bit;
      if (after[i / 64] != old)
        page_written[i / 64 / WORDS] = true;
    }
  }
  check_bitmap (b, &g, after, "dlog-roundtrip", "after setting and clearing bits");
  FZ_CHECK ("dlog-roundtrip", dlog_flush (dl) == 0, "dlog_flush failed: %m");
  dlog_close (dl);
  dl = NULL;
  {
    /* Expected: pages that changed (and pages that failed their checks)
     * hold the bitmap; the others hold what the file had, or the bitmap
     * (a superset of the file's bits: rewriting them loses nothing). */
    b2 = bitmap_new (g.size, g.region);
    if (!b2)
      abort ();
    r = dlog_open (path, &id, b2, &dl, &info, err, sizeof err);
    FZ_CHECK ("dlog-roundtrip", r == 0, "reopening after a flush failed: %s", err);
    FZ_CHECK ("dlog-roundtrip", !info.created && !info.header_bad && info.bad_pages == 0,
              "after a flush: created=%d header_bad=%d bad_pages=%" PRIu64, info.created,
              info.header_bad, info.bad_pages);
    for (k = 0; k < g.npages; k++) {
      bool as_bitmap = true, as_file = true;
      for (w = 0; w < WORDS && k * WORDS + w < g.nwords; w++) {
        uint64_t gw = k * WORDS + w;
        as_bitmap &= b2->words[gw] == after[gw];
        as_file &= b2->words[gw] == e.file_words[gw];
      }
      FZ_CHECK ("dlog-roundtrip", as_bitmap || (!page_written[k] && as_file),
                "after flush and reopen: page %" PRIu64 " holds neither the bitmap%s", k,
                page_written[k] ? " (it changed)" : " nor the file's old bits");
    }
    FZ_CHECK ("dlog-roundtrip", b2->words[g.nwords] == 0, "bits past the bitmap's end");
  }
  if (flags & F_INVALIDATE) {
    uint64_t *ones = calloc (g.nwords + 1, 8);
    if (!ones)
      abort ();
    for (w = 0; w < g.nwords; w++)
      ones[w] = word_mask (&g, w);
    dlog_invalidate (dl);
    dlog_close (dl);
    dl = NULL;
    bitmap_free (b2);
    b2 = bitmap_new (g.size, g.region);
    if (!b2)
      abort ();
    r = dlog_open (path, &id, b2, &dl, &info, err, sizeof err);
    FZ_CHECK ("dlog-roundtrip", r == 0 && info.bad_pages == g.npages && !info.header_bad,
              "after dlog_invalidate: r=%d bad_pages=%" PRIu64 " of %" PRIu64 " header_bad=%d",
              r, info.bad_pages, g.npages, info.header_bad);
    check_bitmap (b2, &g, ones, "dlog-roundtrip", "after invalidate");
    free (ones);
  }

 out:
  dlog_close (dl);
  bitmap_free (b);
  bitmap_free (b2);
  free (preset);
  free (after);
  free (e.words);
  free (e.file_words);
  free (e.page_bad);
  free (page_written);
  return 0;
}
